// Command openshift-fixtures writes Kubernetes manifests holding exactly what OpenShift's service CA
// (openshift/service-ca-operator with github.com/openshift/library-go/pkg/crypto) writes to a
// cluster: the signing CA Secret before and after one rotation, the published bundle ConfigMap,
// serving-certificate Secrets for a ClusterIP and a headless Service, the Services as the signer
// leaves them, and an injected ConfigMap. See README.md for the layout and the facts a test can
// assert; upstream.go names the upstream file each step mirrors.
//
//	go run . -out DIR -namespace NS [-ca-namespace openshift-service-ca] [-now RFC3339]
//	         [-uid-web UID] [-uid-db UID] [-uid-legacy UID] [-ca-age 9600h] [-rotation-reason TEXT]
package main

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/cert"

	"github.com/openshift/library-go/pkg/crypto"
)

// Versions of the upstream code this generator uses or mirrors (also written to fixtures.json).
const (
	libraryGoVersion        = "github.com/openshift/library-go v0.0.0-20251107090138-0de9712313a5"
	serviceCAOperatorSource = "github.com/openshift/service-ca-operator (master, mirrored in upstream.go: the module proxy serves no version of it)"
)

type objectEntry struct {
	File       string `json:"file"`
	Stage      string `json:"stage"`
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Note       string `json:"note,omitempty"`
}

type certFacts struct {
	Subject        string   `json:"subject"`
	Issuer         string   `json:"issuer"`
	SerialHex      string   `json:"serialHex"`
	NotBefore      string   `json:"notBefore"`
	NotAfter       string   `json:"notAfter"`
	SubjectKeyID   string   `json:"subjectKeyId"`
	AuthorityKeyID string   `json:"authorityKeyId"`
	IsCA           bool     `json:"isCA"`
	DNSNames       []string `json:"dnsNames,omitempty"`
	ServiceUIDExt  string   `json:"serviceUidExtensionHex,omitempty"`
	SHA256         string   `json:"sha256"`
}

type servingFacts struct {
	Service          string            `json:"service"`
	Secret           string            `json:"secret"`
	UID              string            `json:"uid"`
	Headless         bool              `json:"headless"`
	IssuedBy         string            `json:"issuedBy"`
	Leaf             certFacts         `json:"leaf"`
	ChainSHA256      []string          `json:"tlsCrtChainSha256"`
	ChainRoles       []string          `json:"tlsCrtChainRoles"`
	SecretAnnotation map[string]string `json:"secretAnnotations"`
	ServiceAnnots    map[string]string `json:"serviceAnnotations"`
	TLSCrtSHA256     string            `json:"tlsCrtSha256"`
}

type index struct {
	Generator   string              `json:"generator"`
	Upstream    map[string]string   `json:"upstream"`
	Now         string              `json:"now"`
	CACreated   string              `json:"caCreated"`
	RealClock   bool                `json:"realClock"`
	Namespace   string              `json:"namespace"`
	CANamespace string              `json:"caNamespace"`
	UIDs        map[string]string   `json:"uids"`
	UIDsGen     []string            `json:"uidsGenerated,omitempty"`
	Rotation    map[string]string   `json:"rotation"`
	Objects     []objectEntry       `json:"objects"`
	Scenarios   map[string][]string `json:"scenarios"`
	PEM         map[string]string   `json:"pem"`
	Facts       map[string]any      `json:"facts"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "openshift-fixtures:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "", "output directory (created; existing files are overwritten)")
	ns := flag.String("namespace", "", "namespace of the Services, serving Secrets and injected ConfigMap")
	caNS := flag.String("ca-namespace", "openshift-service-ca", "namespace of the signing-key Secret and signing-cabundle ConfigMap")
	nowFlag := flag.String("now", "", "RFC 3339 time of the rotation and of issuing web/db (default: the real clock)")
	caAge := flag.Duration("ca-age", 400*24*time.Hour, "age of the initial CA at -now; >= 395 days (9480h) makes the rotation time-based as upstream does it")
	reason := flag.String("rotation-reason", "", "force the rotation with this reason (upstream forceRotation.reason); needed when -ca-age is below 9480h")
	uidWeb := flag.String("uid-web", "", "UID of Service web (as assigned by the API server); random if empty")
	uidDB := flag.String("uid-db", "", "UID of Service db; random if empty")
	uidLegacy := flag.String("uid-legacy", "", "UID of Service legacy; random if empty")
	flag.Parse()
	if *out == "" || *ns == "" {
		flag.Usage()
		return fmt.Errorf("-out and -namespace are required")
	}
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", flag.Args())
	}

	now := clock{at: time.Now(), real: true}
	if *nowFlag != "" {
		t, err := time.Parse(time.RFC3339, *nowFlag)
		if err != nil {
			return fmt.Errorf("-now: %v", err)
		}
		now = clock{at: t.UTC().Truncate(time.Second)}
	}
	created := clock{at: now.at.Add(-*caAge), real: now.real && *caAge == 0}

	uids := map[string]string{"web": *uidWeb, "db": *uidDB, "legacy": *uidLegacy}
	var generated []string
	for _, k := range []string{"web", "db", "legacy"} {
		if uids[k] == "" {
			uids[k] = randomUID()
			generated = append(generated, k)
		}
	}
	if len(generated) > 0 {
		fmt.Fprintf(os.Stderr, "openshift-fixtures: no UID given for %s; using random UIDs (the serving Secrets will not pair with live Services)\n", strings.Join(generated, ", "))
	}

	w := &writer{dir: *out}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	idx := &index{
		Generator:   "hack/openshift-fixtures",
		Upstream:    map[string]string{"library-go": libraryGoVersion, "service-ca-operator": serviceCAOperatorSource},
		Now:         now.at.UTC().Format(time.RFC3339),
		CACreated:   created.at.UTC().Format(time.RFC3339),
		RealClock:   now.real,
		Namespace:   *ns,
		CANamespace: *caNS,
		UIDs:        uids,
		UIDsGen:     generated,
		PEM:         map[string]string{},
		Facts:       map[string]any{},
		Scenarios:   map[string][]string{},
	}

	// Namespaces (convenience: upstream creates its own namespace with more metadata).
	for _, n := range uniq(*caNS, *ns) {
		obj := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: n}}
		if err := w.object(idx, "namespaces/namespace-"+n+".json", "namespaces", obj, "convenience object, not written by upstream"); err != nil {
			return err
		}
	}

	// 1. The CA manager's first pass: signing-key and signing-cabundle.
	initial := signingSecretTemplate(*caNS)
	if err := initializeSigningSecret(initial, created); err != nil {
		return err
	}
	initialBundle := manageSignerCABundle(initial)
	if err := w.object(idx, "ca-initial/secret-signing-key.json", "ca-initial", initial, ""); err != nil {
		return err
	}
	if err := w.object(idx, "ca-initial/configmap-signing-cabundle.json", "ca-initial", initialBundle, ""); err != nil {
		return err
	}
	oldCerts, err := cert.ParseCertsPEM(initial.Data[corev1.TLSCertKey])
	if err != nil {
		return err
	}
	oldCA := oldCerts[0]

	// Optional Service "legacy", issued by the initial CA right after it was created.
	initialServing, initialIntermediate, err := loadServingCA(initial)
	if err != nil {
		return err
	}
	legacySvc := service(*ns, "legacy", "legacy-tls", false)
	legacySvc.UID = types.UID(uids["legacy"])
	legacySecret, legacySvcAfter, legacyCert, err := generateCert(initialServing, initialIntermediate, legacySvc, created)
	if err != nil {
		return err
	}

	// 2. One rotation by the upstream algorithm, then the bundle it publishes.
	rotated := initial.DeepCopy()
	msg, sca, err := maybeRotateSigningSecret(rotated, oldCA, *reason, now)
	if err != nil {
		return err
	}
	if msg == "" {
		return fmt.Errorf("upstream would not rotate: the initial CA expires %s, not before now+395d (%s), and no -rotation-reason was given; raise -ca-age to at least 9480h or pass -rotation-reason",
			oldCA.NotAfter.UTC().Format(time.RFC3339), now.at.Add(minimumTrustDuration).UTC().Format(time.RFC3339))
	}
	rotatedBundle := manageSignerCABundle(rotated)
	if err := w.object(idx, "ca-rotated/secret-signing-key.json", "ca-rotated", rotated, ""); err != nil {
		return err
	}
	if err := w.object(idx, "ca-rotated/configmap-signing-cabundle.json", "ca-rotated", rotatedBundle, ""); err != nil {
		return err
	}

	// 3. The controller restarted on the rotated Secret issues web and db.
	servingCA, intermediate, err := loadServingCA(rotated)
	if err != nil {
		return err
	}
	type issued struct {
		svc    *corev1.Service
		secret *corev1.Secret
		tls    *crypto.TLSCertificateConfig
	}
	var serving []issued
	for _, s := range []struct {
		name, secret string
		headless     bool
	}{{"web", "web-tls", false}, {"db", "db-tls", true}} {
		svc := service(*ns, s.name, s.secret, s.headless)
		svc.UID = types.UID(uids[s.name])
		secret, svcAfter, tls, err := generateCert(servingCA, intermediate, svc, now)
		if err != nil {
			return err
		}
		serving = append(serving, issued{svcAfter, secret, tls})
		if err := w.object(idx, "services/service-"+s.name+".json", "services", forCreate(svcAfter), "create first; pass its metadata.uid as -uid-"+s.name); err != nil {
			return err
		}
		if err := w.object(idx, "serving/secret-"+s.secret+".json", "serving", secret, ""); err != nil {
			return err
		}
	}

	// 4. A ConfigMap the user annotated, after the injector's Sync with the rotated bundle.
	userCM := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: *ns, Name: "ca-bundle", Annotations: map[string]string{InjectCABundleAnnotationName: "true"}},
	}
	injected := injectConfigMap(userCM, rotatedBundle.Data[BundleDataKey])
	if err := w.object(idx, "injection/configmap-ca-bundle.json", "injection", injected, "openshift.io/description wording reconstructed, see README"); err != nil {
		return err
	}

	// Trust bridge: the pre-rotation Service legacy and its Secret (upstream re-issues it once the
	// controller restarts on the rotated CA, because its AKID is the old CA's SKID).
	if err := w.object(idx, "trust-bridge/service-legacy.json", "trust-bridge", forCreate(legacySvcAfter), "create first; pass its metadata.uid as -uid-legacy"); err != nil {
		return err
	}
	if err := w.object(idx, "trust-bridge/secret-legacy-tls.json", "trust-bridge", legacySecret, "issued by the pre-rotation CA: stale after rotation"); err != nil {
		return err
	}

	// Raw PEM files for openssl.
	newCA := servingCA.Config.Certs[0]
	pems := []struct {
		name string
		data []byte
	}{
		{"ca-initial.crt", initial.Data[corev1.TLSCertKey]},
		{"bundle-initial.crt", []byte(initialBundle.Data[BundleDataKey])},
		{"ca-rotated.crt", rotated.Data[corev1.TLSCertKey]},
		{"bundle-rotated.crt", []byte(rotatedBundle.Data[BundleDataKey])},
		{"intermediate-ca.crt", rotated.Data[IntermediateDataKey]},
		{"old-under-new.crt", encode(sca.bundle[1])},
		{"web-tls.crt", serving[0].secret.Data[corev1.TLSCertKey]},
		{"web-leaf.crt", encode(serving[0].tls.Certs[0])},
		{"db-tls.crt", serving[1].secret.Data[corev1.TLSCertKey]},
		{"db-leaf.crt", encode(serving[1].tls.Certs[0])},
		{"legacy-tls.crt", legacySecret.Data[corev1.TLSCertKey]},
		{"legacy-leaf.crt", encode(legacyCert.Certs[0])},
	}
	for _, p := range pems {
		rel := "pem/" + p.name
		if err := w.file(rel, p.data); err != nil {
			return err
		}
		idx.PEM[strings.TrimSuffix(p.name, ".crt")] = rel
	}

	// Facts.
	idx.Rotation = map[string]string{"kind": "time-based", "reason": "", "message": msg}
	if forced := rotated.Annotations[ForcedRotationReasonAnnotationName]; forced != "" {
		idx.Rotation["kind"], idx.Rotation["reason"] = "forced", forced
	}
	idx.Facts["caCommonName"] = oldCA.Subject.CommonName
	idx.Facts["caInitial"] = facts(oldCA)
	idx.Facts["caRotated"] = facts(newCA)
	idx.Facts["oldUnderNew"] = facts(sca.bundle[1])
	idx.Facts["newUnderOld"] = facts(sca.intermediateCACert)
	idx.Facts["previousCATrustedUntil"] = sca.oldCAExpiry.UTC().Format(time.RFC3339)
	idx.Facts["bundleInitialSha256"] = sum([]byte(initialBundle.Data[BundleDataKey]))
	idx.Facts["bundleRotatedSha256"] = sum([]byte(rotatedBundle.Data[BundleDataKey]))
	idx.Facts["bundleRotatedChainSha256"] = chainSums(rotatedBundle.Data[BundleDataKey])
	var sf []servingFacts
	for _, s := range serving {
		sf = append(sf, serveFacts(s.svc, s.secret, "ca-rotated", []string{"leaf", "ca-rotated (tls.crt)", "new-under-old (intermediate-ca.crt)"}))
	}
	sf = append(sf, serveFacts(legacySvcAfter, legacySecret, "ca-initial", []string{"leaf", "ca-initial (tls.crt)"}))
	idx.Facts["serving"] = sf

	// Self-check with Go's path building (what upstream's own rotation tests use), section 9.5 of
	// the behaviour reference: both bundles trust both generations of serving certificates.
	trust := map[string]string{}
	bundles := map[string]string{"bundle-initial": initialBundle.Data[BundleDataKey], "bundle-rotated": rotatedBundle.Data[BundleDataKey]}
	secrets := map[string]*corev1.Secret{"web": serving[0].secret, "db": serving[1].secret, "legacy": legacySecret}
	for bn, bundle := range bundles {
		for sn, secret := range secrets {
			if err := verifyServing(secret, []byte(bundle), sn+"."+*ns+".svc", now.at); err != nil {
				return fmt.Errorf("self-check: %s does not verify against %s: %v", secret.Name, bn, err)
			}
			trust[bn+"/"+secret.Name] = "ok"
		}
	}
	idx.Facts["goVerify"] = trust

	nsFiles := []string{}
	for _, n := range uniq(*caNS, *ns) {
		nsFiles = append(nsFiles, "namespaces/namespace-"+n+".json")
	}
	idx.Scenarios["adopt-rotated"] = append(append([]string{}, nsFiles...),
		"ca-rotated/secret-signing-key.json", "ca-rotated/configmap-signing-cabundle.json",
		"services/service-web.json", "services/service-db.json",
		"serving/secret-web-tls.json", "serving/secret-db-tls.json",
		"injection/configmap-ca-bundle.json")
	idx.Scenarios["trust-bridge"] = []string{"trust-bridge/service-legacy.json", "trust-bridge/secret-legacy-tls.json"}
	idx.Scenarios["ca-initial"] = append(append([]string{}, nsFiles...),
		"ca-initial/secret-signing-key.json", "ca-initial/configmap-signing-cabundle.json")

	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	if err := w.file("fixtures.json", append(b, '\n')); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "openshift-fixtures: wrote %d objects to %s (%s)\n", len(idx.Objects), *out, msg)
	return nil
}

// service builds a Service as a user creates it, asking for a serving certificate with the beta
// annotation.
func service(ns, name, secretName string, headless bool) *corev1.Service {
	svc := &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   ns,
			Name:        name,
			Annotations: map[string]string{ServingCertSecretAnnotation: secretName},
		},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443), Protocol: corev1.ProtocolTCP}},
		},
	}
	if headless {
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	}
	return svc
}

// forCreate drops the UID (assigned by the API server) from a Service manifest.
func forCreate(svc *corev1.Service) *corev1.Service {
	c := svc.DeepCopy()
	c.UID = ""
	return c
}

type writer struct{ dir string }

func (w *writer) file(rel string, data []byte) error {
	p := filepath.Join(w.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// object writes one manifest as indented JSON without the fields a client never sends
// (metadata.creationTimestamp: null, status).
func (w *writer) object(idx *index, rel, stage string, obj any, note string) error {
	raw, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	delete(m, "status")
	meta, _ := m["metadata"].(map[string]any)
	if meta["creationTimestamp"] == nil {
		delete(meta, "creationTimestamp")
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := w.file(rel, append(b, '\n')); err != nil {
		return err
	}
	namespace, _ := meta["namespace"].(string)
	name, _ := meta["name"].(string)
	idx.Objects = append(idx.Objects, objectEntry{
		File: rel, Stage: stage, APIVersion: m["apiVersion"].(string), Kind: m["kind"].(string),
		Namespace: namespace, Name: name, Note: note,
	})
	return nil
}

func encode(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func chainSums(pemData string) []string {
	certs, err := cert.ParseCertsPEM([]byte(pemData))
	if err != nil {
		panic(err)
	}
	var out []string
	for _, c := range certs {
		out = append(out, sum(c.Raw))
	}
	return out
}

func facts(c *x509.Certificate) certFacts {
	f := certFacts{
		Subject:        c.Subject.String(),
		Issuer:         c.Issuer.String(),
		SerialHex:      fmt.Sprintf("%x", c.SerialNumber),
		NotBefore:      c.NotBefore.UTC().Format(time.RFC3339),
		NotAfter:       c.NotAfter.UTC().Format(time.RFC3339),
		SubjectKeyID:   hex.EncodeToString(c.SubjectKeyId),
		AuthorityKeyID: hex.EncodeToString(c.AuthorityKeyId),
		IsCA:           c.IsCA,
		SHA256:         sum(c.Raw),
	}
	if len(c.DNSNames) > 0 {
		f.DNSNames = append([]string{}, c.DNSNames...)
	}
	for _, e := range c.Extensions {
		if e.Id.Equal(OpenShiftServerSigningServiceUIDOID) {
			f.ServiceUIDExt = hex.EncodeToString(e.Value)
		}
	}
	return f
}

func serveFacts(svc *corev1.Service, secret *corev1.Secret, issuedBy string, roles []string) servingFacts {
	certs, err := cert.ParseCertsPEM(secret.Data[corev1.TLSCertKey])
	if err != nil {
		panic(err)
	}
	f := servingFacts{
		Service:          svc.Name,
		Secret:           secret.Name,
		UID:              string(svc.UID),
		Headless:         svc.Spec.ClusterIP == corev1.ClusterIPNone,
		IssuedBy:         issuedBy,
		Leaf:             facts(certs[0]),
		ChainRoles:       roles,
		SecretAnnotation: secret.Annotations,
		ServiceAnnots:    svc.Annotations,
		TLSCrtSHA256:     sum(secret.Data[corev1.TLSCertKey]),
	}
	for _, c := range certs {
		f.ChainSHA256 = append(f.ChainSHA256, sum(c.Raw))
	}
	return f
}

// verifyServing checks that tls.key matches the leaf and that the chain in tls.crt verifies for
// dnsName against bundle with crypto/x509.
func verifyServing(secret *corev1.Secret, bundle []byte, dnsName string, at time.Time) error {
	if _, err := tls.X509KeyPair(secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]); err != nil {
		return err
	}
	certs, err := cert.ParseCertsPEM(secret.Data[corev1.TLSCertKey])
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return fmt.Errorf("empty bundle")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{DNSName: dnsName, Roots: roots, Intermediates: inter, CurrentTime: at})
	return err
}

func randomUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func uniq(items ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range items {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
