// Command testenv is service-ca's local Kubernetes control plane for tests and `make run`:
// embedded etcd, a real kube-apiserver and a kube-controller-manager (garbage collector and
// namespace controllers), all built from the Kubernetes Go modules. The same binary is also
// kubectl when invoked under that name (or as `testenv kubectl ...`).
//
//	testenv up --data-dir DIR --kubeconfig PATH [--exit-on-stdin-eof]
//	testenv kubectl ...
//
// `up` prints exactly one line starting with "ready " once /readyz answers, and shuts everything
// down on SIGTERM/SIGINT (or when stdin closes, with --exit-on-stdin-eof). Restarting on the same
// data dir keeps every object and the same ports and credentials.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	personality := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if personality != "kubectl" {
		if len(args) == 0 {
			usage()
		}
		personality, args = args[0], args[1:]
	}
	// The Kubernetes commands read os.Args themselves, so present them as if they were invoked
	// directly.
	os.Args = append([]string{personality}, args...)
	switch personality {
	case "up":
		if err := up(args); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
			os.Exit(1)
		}
	case "kubectl":
		command := kubectlcmd.NewDefaultKubectlCommand()
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
	case "kube-apiserver":
		os.Exit(cli.Run(apiserverapp.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(kcmapp.NewControllerManagerCommand()))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: testenv up --data-dir DIR --kubeconfig PATH [--exit-on-stdin-eof] | testenv kubectl ARGS...")
	os.Exit(2)
}
