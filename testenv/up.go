package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// ports are kept in the data dir so a restarted control plane is reachable at the same address.
type ports struct {
	EtcdClient int `json:"etcdClient"`
	EtcdPeer   int `json:"etcdPeer"`
	APIServer  int `json:"apiServer"`
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "state directory (etcd data, credentials, logs); a temp dir when empty")
	kubeconfig := fs.String("kubeconfig", "", "where to write the admin kubeconfig (default <data-dir>/kubeconfig)")
	exitOnEOF := fs.Bool("exit-on-stdin-eof", false, "shut down when stdin is closed (the parent process died)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	started := time.Now()
	if *dataDir == "" {
		dir, err := os.MkdirTemp("", "testenv-")
		if err != nil {
			return err
		}
		*dataDir = dir
		// A temporary control plane leaves nothing behind (etcd preallocates 64 MB of WAL).
		defer os.RemoveAll(dir)
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if *kubeconfig == "" {
		*kubeconfig = filepath.Join(dir, "kubeconfig")
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	creds, err := ensureCredentials(filepath.Join(dir, "pki"))
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	p, err := loadOrPickPorts(filepath.Join(dir, "ports.json"))
	if err != nil {
		return fmt.Errorf("ports: %w", err)
	}

	etcd, err := startEtcd(filepath.Join(dir, "etcd"), p)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	apiserver, err := startChild(self, filepath.Join(dir, "logs", "kube-apiserver.log"), "kube-apiserver", apiserverArgs(creds, p)...)
	if err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	defer stopChild(apiserver)

	server := fmt.Sprintf("https://127.0.0.1:%d", p.APIServer)
	if err := waitReady(server, creds, apiserver, 120*time.Second); err != nil {
		return err
	}
	if err := writeKubeconfig(*kubeconfig, server, creds); err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	kcm, err := startChild(self, filepath.Join(dir, "logs", "kube-controller-manager.log"), "kube-controller-manager",
		"--kubeconfig="+*kubeconfig,
		"--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller",
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--concurrent-gc-syncs=5",
		"--v=1",
	)
	if err != nil {
		return fmt.Errorf("kube-controller-manager: %w", err)
	}
	defer stopChild(kcm)

	fmt.Printf("ready kubeconfig=%s server=%s data-dir=%s startup=%.2fs\n", *kubeconfig, server, dir, time.Since(started).Seconds())

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	if *exitOnEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinClosed)
		}()
	}
	select {
	case s := <-signals:
		fmt.Fprintf(os.Stderr, "testenv: %v, shutting down\n", s)
	case <-stdinClosed:
		fmt.Fprintln(os.Stderr, "testenv: stdin closed, shutting down")
	case <-apiserver.done:
		return fmt.Errorf("kube-apiserver exited unexpectedly: %v (see %s)", apiserver.err, apiserver.log)
	case <-kcm.done:
		return fmt.Errorf("kube-controller-manager exited unexpectedly: %v (see %s)", kcm.err, kcm.log)
	}
	return nil
}

func apiserverArgs(c credentials, p ports) []string {
	return []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", p.EtcdClient),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", p.APIServer),
		"--tls-cert-file=" + c.path("apiserver.crt"),
		"--tls-private-key-file=" + c.path("apiserver.key"),
		"--client-ca-file=" + c.path("ca.crt"),
		"--service-account-key-file=" + c.path("service-account.key"),
		"--service-account-signing-key-file=" + c.path("service-account.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/16",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}
}

func loadOrPickPorts(path string) (ports, error) {
	var p ports
	if raw, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(raw, &p); err != nil {
			return p, fmt.Errorf("%s: %w", path, err)
		}
		return p, nil
	}
	var err error
	for _, port := range []*int{&p.EtcdClient, &p.EtcdPeer, &p.APIServer} {
		if *port, err = freePort(); err != nil {
			return p, err
		}
	}
	raw, _ := json.Marshal(p)
	return p, os.WriteFile(path, raw, 0o644)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dir string, p ports) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "fatal"   // shutdown logs "errors" for closed listeners; failures surface via Err()
	cfg.UnsafeNoFsync = true // test data: a clean shutdown is enough, the OS keeps the pages
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", p.EtcdClient)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", p.EtcdPeer)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("etcd did not become ready within 60s")
	}
}

type child struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startChild(self, logPath, personality string, args ...string) (*child, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{personality}, args...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// If this process dies without cleaning up, the kernel takes the children with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	c := &child{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	return c, nil
}

func stopChild(c *child) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func waitReady(server string, c credentials, apiserver *child, timeout time.Duration) error {
	client, err := adminHTTPClient(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-apiserver.done:
			return fmt.Errorf("kube-apiserver exited during start-up: %v (see %s)", apiserver.err, apiserver.log)
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready after %v: %s", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func adminHTTPClient(c credentials) (*http.Client, error) {
	pair, err := tls.LoadX509KeyPair(c.path("admin.crt"), c.path("admin.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(c.path("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}},
	}, nil
}

func writeKubeconfig(path, server string, c credentials) error {
	read := func(name string) (string, error) {
		raw, err := os.ReadFile(c.path(name))
		return base64.StdEncoding.EncodeToString(raw), err
	}
	ca, err := read("ca.crt")
	if err != nil {
		return err
	}
	cert, err := read("admin.crt")
	if err != nil {
		return err
	}
	key, err := read("admin.key")
	if err != nil {
		return err
	}
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: testenv-admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: testenv
  context:
    cluster: testenv
    user: testenv-admin
current-context: testenv
`, server, ca, cert, key)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
