package main

// This file mirrors, function by function, the parts of openshift/service-ca-operator that decide
// what an OpenShift cluster holds. The module github.com/openshift/service-ca-operator cannot be
// imported: the Go module proxy refuses every version of it ("403 This module version is not
// available"), and its packages would drag in the whole operator (informers, library-go's operator
// framework). Every function below therefore calls the same github.com/openshift/library-go/pkg/crypto
// primitives the operator calls, in the same order, with the same arguments. The upstream file and
// function each one mirrors is named in its comment. Names are kept so the two can be read side by
// side.
//
// Upstream sources read (openshift/service-ca-operator, master branch, 2024-2025):
//   pkg/controller/api/api.go                                          constants
//   pkg/operator/starter.go                                            790 d / 395 d durations
//   pkg/operator/sync_common.go                                        manageSignerCA, initializeSigningSecret,
//                                                                      manageSignerCABundle, serviceServingCertSignerName
//   pkg/operator/rotate.go                                             maybeRotateSigningSecret, rotateSigningCA,
//                                                                      createIntermediateCACert, updateSigningSecret
//   pkg/operator/util/cert.go                                          CreateCertificate
//   bindata/v4.0.0/controller/signing-secret.yaml, signing-cabundle.yaml  object templates
//   pkg/controller/servingcert/starter/starter.go                     GetCA + readIntermediateCACert, dnsSuffix
//   pkg/controller/servingcert/controller/secret_creating_controller.go
//                                                                      toBaseSecret, certSubjectsForService,
//                                                                      MakeServingCert, toRequiredSecret, ownerRef,
//                                                                      setSecretOwnerDescription, resetServiceAnnotations
//   pkg/controller/servingcert/cryptoextensions/serversigning.go       ServiceServerCertificateExtensionV1
//   pkg/controller/cabundleinjector/configmap.go                       configMapCABundleInjector.Sync
// The openshift.io/description texts of the CA Secret and of the bundle ConfigMap are the ones
// recorded for openshift-service-ca/signing-key and openshift-service-ca/signing-cabundle in
// openshift/origin's TLS-artifact registry (tls/ownership), i.e. what live clusters carry.

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"

	"github.com/openshift/library-go/pkg/controller"
	"github.com/openshift/library-go/pkg/crypto"
)

// pkg/controller/api/api.go
const (
	ForcedRotationReasonAnnotationName = "service-ca.operators.openshift.io/forced-rotation-reason"
	BundleDataKey                      = "ca-bundle.crt"
	IntermediateDataKey                = "intermediate-ca.crt"
	OwningJiraComponent                = "service-ca"

	InjectCABundleAnnotationName      = "service.beta.openshift.io/inject-cabundle"
	AlphaInjectCABundleAnnotationName = "service.alpha.openshift.io/inject-cabundle"
	InjectionDataKey                  = "service-ca.crt"

	ServingCertSecretAnnotation         = "service.beta.openshift.io/serving-cert-secret-name"
	AlphaServingCertSecretAnnotation    = "service.alpha.openshift.io/serving-cert-secret-name"
	ServingCertCreatedByAnnotation      = "service.beta.openshift.io/serving-cert-signed-by"
	AlphaServingCertCreatedByAnnotation = "service.alpha.openshift.io/serving-cert-signed-by"
	ServingCertErrorAnnotation          = "service.beta.openshift.io/serving-cert-generation-error"
	AlphaServingCertErrorAnnotation     = "service.alpha.openshift.io/serving-cert-generation-error"
	ServingCertErrorNumAnnotation       = "service.beta.openshift.io/serving-cert-generation-error-num"
	AlphaServingCertErrorNumAnnotation  = "service.alpha.openshift.io/serving-cert-generation-error-num"

	ServiceUIDAnnotation             = "service.beta.openshift.io/originating-service-uid"
	AlphaServiceUIDAnnotation        = "service.alpha.openshift.io/originating-service-uid"
	ServiceNameAnnotation            = "service.beta.openshift.io/originating-service-name"
	AlphaServiceNameAnnotation       = "service.alpha.openshift.io/originating-service-name"
	ServingCertExpiryAnnotation      = "service.beta.openshift.io/expiry"
	AlphaServingCertExpiryAnnotation = "service.alpha.openshift.io/expiry"
)

// github.com/openshift/api/annotations (OpenShiftComponent, OpenShiftDescription).
const (
	OpenShiftComponent   = "openshift.io/owning-component"
	OpenShiftDescription = "openshift.io/description"
)

// pkg/operator/starter.go (default profile; the ShortCertRotation gate would use 2h30m / 1h15m)
// and pkg/controller/servingcert (2 years for serving certificates).
const (
	signingCertificateLifetime = 790 * 24 * time.Hour
	minimumTrustDuration       = 395 * 24 * time.Hour
	servingCertificateLifetime = 2 * 365 * 24 * time.Hour
	// pkg/controller/servingcert/starter/starter.go: "TODO this needs to be configurable".
	dnsSuffix = "cluster.local"
)

// Descriptions as recorded for live clusters (openshift/origin tls/ownership registry).
const (
	signingSecretDescription   = "Service CA secret contains a signing key that will be used to issue a signed serving certificate/key pair to services annotated with 'service.beta.openshift.io/serving-cert-secret-name'"
	signingCABundleDescription = "Service CA configmap contains the data for the PEM-encoded CA signing bundle which will be injected to resources annotated with 'service.beta.openshift.io/inject-cabundle=true'"
	// The ConfigMap injector's description is NOT verified against upstream source: the injector
	// version read sets only openshift.io/owning-component, the behaviour reference (section 10.3)
	// says it also sets a description. This text is built by analogy with the Secret injector's
	// ("Secret is added/updated with a data item containing the CA signing bundle that can be used
	// to verify service-serving certificates"). Do not assert its wording.
	injectedConfigMapDescription = "ConfigMap is added/updated with a data item containing the CA signing bundle that can be used to verify service-serving certificates"
)

// clock stands in for time.Now in the upstream code below. When it is the real clock, the exact
// upstream library-go entry points are called; when the caller fixed the time (-now, -ca-age), the
// library-go variant that takes the time as a parameter is used, or, for serving certificates, where
// library-go has none, the certificate is re-signed with only its validity changed (see reissueAt).
type clock struct {
	at   time.Time
	real bool
}

// bindata/v4.0.0/controller/signing-secret.yaml
func signingSecretTemplate(caNamespace string) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: caNamespace,
			Name:      "signing-key",
			Annotations: map[string]string{
				OpenShiftComponent:   OwningJiraComponent,
				OpenShiftDescription: signingSecretDescription,
			},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: nil, corev1.TLSPrivateKeyKey: nil},
	}
}

// bindata/v4.0.0/controller/signing-cabundle.yaml
func signingCABundleTemplate(caNamespace string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: caNamespace,
			Name:      "signing-cabundle",
			Annotations: map[string]string{
				OpenShiftComponent:   OwningJiraComponent,
				OpenShiftDescription: signingCABundleDescription,
			},
		},
		Data: map[string]string{BundleDataKey: ""},
	}
}

// pkg/operator/sync_common.go serviceServingCertSignerName
func serviceServingCertSignerName(c clock) string {
	return fmt.Sprintf("%s@%d", "openshift-service-serving-signer", c.at.Unix())
}

// pkg/operator/sync_common.go initializeSigningSecret (validityDurationForTesting = 0).
func initializeSigningSecret(secret *corev1.Secret, c clock) error {
	name := serviceServingCertSignerName(c)
	var ca *crypto.TLSCertificateConfig
	var err error
	if c.real {
		ca, err = crypto.MakeSelfSignedCAConfig(name, signingCertificateLifetime)
	} else {
		ca, err = crypto.UnsafeMakeSelfSignedCAConfigForDurationAtTime(name, func() time.Time { return c.at }, signingCertificateLifetime)
	}
	if err != nil {
		return err
	}
	certBuff := &bytes.Buffer{}
	keyBuff := &bytes.Buffer{}
	if err := ca.WriteCertConfig(certBuff, keyBuff); err != nil {
		return err
	}
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	secret.Data[corev1.TLSCertKey] = certBuff.Bytes()
	secret.Data[corev1.TLSPrivateKeyKey] = keyBuff.Bytes()
	return nil
}

// pkg/operator/sync_common.go manageSignerCABundle: the bundle published in signing-cabundle.
func manageSignerCABundle(signingSecret *corev1.Secret) *corev1.ConfigMap {
	configMap := signingCABundleTemplate(signingSecret.Namespace)
	// Prefer the full bundle after rotation since it contains all required CAs.
	bundle := signingSecret.Data[BundleDataKey]
	if len(bundle) == 0 {
		bundle = signingSecret.Data[corev1.TLSCertKey]
	}
	configMap.Data[BundleDataKey] = string(bundle)
	return configMap
}

// pkg/operator/rotate.go signingCA
type signingCA struct {
	config             *crypto.TLSCertificateConfig
	bundle             []*x509.Certificate
	intermediateCACert *x509.Certificate
	oldCAExpiry        time.Time
}

// pkg/operator/rotate.go updateSigningSecret
func (ca *signingCA) updateSigningSecret(secret *corev1.Secret) error {
	caPEM, keyPEM, err := ca.config.GetPEMBytes()
	if err != nil {
		return err
	}
	bundlePEM, err := crypto.EncodeCertificates(ca.bundle...)
	if err != nil {
		return err
	}
	intermediatePEM, err := crypto.EncodeCertificates(ca.intermediateCACert)
	if err != nil {
		return err
	}
	d := secret.Data
	d[corev1.TLSCertKey] = caPEM
	d[corev1.TLSPrivateKeyKey] = keyPEM
	d[BundleDataKey] = bundlePEM
	d[IntermediateDataKey] = intermediatePEM
	return nil
}

// pkg/operator/rotate.go maybeRotateSigningSecret. Returns the rotation message ("" when upstream
// would not rotate) and the signingCA (for the facts written to fixtures.json).
func maybeRotateSigningSecret(secret *corev1.Secret, currentCACert *x509.Certificate, reason string, c clock) (string, *signingCA, error) {
	forcedRotation := forcedRotationRequired(secret, reason)
	minimumExpiry := c.at.Add(minimumTrustDuration)
	timeBasedRotation := currentCACert.NotAfter.Before(minimumExpiry)
	if !(forcedRotation || timeBasedRotation) {
		return "", nil, nil
	}
	if forcedRotation {
		recordForcedRotationReason(secret, reason)
	}
	keyData := secret.Data[corev1.TLSPrivateKeyKey]
	if len(keyData) == 0 {
		return "", nil, fmt.Errorf("signing secret is missing a value for %q", corev1.TLSPrivateKeyKey)
	}
	key, err := keyutil.ParsePrivateKeyPEM(keyData)
	if err != nil {
		return "", nil, fmt.Errorf("failed to parse private key from PEM: %v", err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return "", nil, fmt.Errorf("expected RSA private key, got %T", key)
	}
	ca, err := rotateSigningCA(currentCACert, rsaKey, c)
	if err != nil {
		return "", nil, err
	}
	if err := ca.updateSigningSecret(secret); err != nil {
		return "", nil, err
	}
	oldCAExpiry := ca.oldCAExpiry.Format(time.RFC3339)
	return fmt.Sprintf("CA rotation complete. The previous CA will be trusted until %s", oldCAExpiry), ca, nil
}

// pkg/operator/rotate.go rotateSigningCA
func rotateSigningCA(currentCACert *x509.Certificate, currentKey *rsa.PrivateKey, c clock) (*signingCA, error) {
	// Generate a new signing cert
	var newCAConfig *crypto.TLSCertificateConfig
	var err error
	if c.real {
		newCAConfig, err = crypto.MakeSelfSignedCAConfigForSubject(currentCACert.Subject, signingCertificateLifetime)
	} else {
		// Same code path (makeSelfSignedCAConfigForSubjectAndDuration) with the clock as a
		// parameter. It takes the CN only; the check below proves the encoded Subject is unchanged.
		newCAConfig, err = crypto.UnsafeMakeSelfSignedCAConfigForDurationAtTime(currentCACert.Subject.CommonName, func() time.Time { return c.at }, signingCertificateLifetime)
	}
	if err != nil {
		return nil, err
	}
	newCACert := newCAConfig.Certs[0]
	if !bytes.Equal(newCACert.RawSubject, currentCACert.RawSubject) {
		return nil, fmt.Errorf("new CA subject %x differs from the current CA subject %x", newCACert.RawSubject, currentCACert.RawSubject)
	}

	// Ensure that the intermediate cert bridging trust between the current and new CAs
	// has an expiry that guarantees a minimum trust duration.
	var currentCACertExpiry *time.Time
	minimumExpiry := c.at.Add(minimumTrustDuration)
	if currentCACert.NotAfter.Before(minimumExpiry) {
		currentCACertExpiry = &minimumExpiry
	}

	currentCACertSignedByNewCA, err := createIntermediateCACert(currentCACert, newCACert, newCAConfig.Key.(*rsa.PrivateKey), currentCACertExpiry)
	if err != nil {
		return nil, fmt.Errorf("failed to create intermediate certificate signed by new ca: %v", err)
	}
	bundle := []*x509.Certificate{
		newCACert,
		currentCACertSignedByNewCA,
	}
	newCACertSignedByOldCA, err := createIntermediateCACert(newCACert, currentCACert, currentKey, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to create intermediate certificate signed by previous ca: %v", err)
	}
	return &signingCA{
		config:             newCAConfig,
		bundle:             bundle,
		intermediateCACert: newCACertSignedByOldCA,
		oldCAExpiry:        currentCACertSignedByNewCA.NotAfter,
	}, nil
}

// pkg/operator/rotate.go createIntermediateCACert
func createIntermediateCACert(targetCACert, signingCACert *x509.Certificate, signingKey *rsa.PrivateKey, expiry *time.Time) (*x509.Certificate, error) {
	// Copy the target cert to allow modification.
	template, err := x509.ParseCertificate(targetCACert.Raw)
	if err != nil {
		return nil, fmt.Errorf("failed to copy ca certificate: %v", err)
	}
	// Enable key identity chaining
	template.AuthorityKeyId = signingCACert.SubjectKeyId

	// Set a new serial number so that the intermediate CA cert is differentiated from the target CA cert.
	serialGenerator := crypto.RandomSerialGenerator{}
	serial, err := serialGenerator.Next(template)
	if err != nil {
		return nil, fmt.Errorf("failed to find next serial number: %v", err)
	}
	template.SerialNumber = big.NewInt(serial)

	// Update the expiry if necessary
	if expiry != nil {
		template.NotAfter = *expiry
	}
	caCert, err := createCertificate(template, signingCACert, targetCACert.PublicKey, signingKey)
	if err != nil {
		return nil, fmt.Errorf("error creating intermediate CA certificate: %v", err)
	}
	return caCert, nil
}

// pkg/operator/util/cert.go CreateCertificate
func createCertificate(template, parent *x509.Certificate, pub, priv interface{}) (*x509.Certificate, error) {
	rawCert, err := x509.CreateCertificate(rand.Reader, template, parent, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("error creating certificate: %v", err)
	}
	parsedCerts, err := x509.ParseCertificates(rawCert)
	if err != nil {
		return nil, fmt.Errorf("error parsing certificate: %v", err)
	}
	return parsedCerts[0], nil
}

// pkg/operator/rotate.go forcedRotationRequired
func forcedRotationRequired(secret *corev1.Secret, reason string) bool {
	if len(reason) == 0 {
		return false
	}
	return reason != secret.Annotations[ForcedRotationReasonAnnotationName]
}

// pkg/operator/rotate.go recordForcedRotationReason
func recordForcedRotationReason(secret *corev1.Secret, reason string) {
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	secret.Annotations[ForcedRotationReasonAnnotationName] = reason
}

// pkg/controller/servingcert/starter/starter.go: the controller loads the CA from the mounted
// signing-key Secret (crypto.GetCA on tls.crt/tls.key) and the optional intermediate-ca.crt, which
// must hold exactly one certificate.
func loadServingCA(signingSecret *corev1.Secret) (*crypto.CA, *x509.Certificate, error) {
	ca, err := crypto.GetCAFromBytes(signingSecret.Data[corev1.TLSCertKey], signingSecret.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, nil, err
	}
	pemBytes, ok := signingSecret.Data[IntermediateDataKey]
	if !ok {
		return ca, nil, nil
	}
	certs, err := cert.ParseCertsPEM(pemBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("error parsing intermediate cert: %s", err)
	}
	if len(certs) != 1 {
		return nil, nil, fmt.Errorf("expected 1 intermediate cert, got %d", len(certs))
	}
	return ca, certs[0], nil
}

// pkg/controller/servingcert/cryptoextensions/serversigning.go
var (
	OpenShiftOID                        = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 2312, 17}
	OpenShiftServerSigningOID           = append(append(asn1.ObjectIdentifier{}, OpenShiftOID...), 100)
	OpenShiftServerSigningServiceOID    = append(append(asn1.ObjectIdentifier{}, OpenShiftServerSigningOID...), 2)
	OpenShiftServerSigningServiceUIDOID = append(append(asn1.ObjectIdentifier{}, OpenShiftServerSigningServiceOID...), 1)
)

// pkg/controller/servingcert/cryptoextensions/serversigning.go ServiceServerCertificateExtensionV1
func ServiceServerCertificateExtensionV1(uid types.UID) crypto.CertificateExtensionFunc {
	return func(cert *x509.Certificate) error {
		marshalledUID, err := asn1.Marshal(uid)
		if err != nil {
			return err
		}
		cert.ExtraExtensions = append(cert.ExtraExtensions, pkix.Extension{
			Id:       OpenShiftServerSigningServiceUIDOID,
			Critical: false,
			Value:    marshalledUID,
		})
		return nil
	}
}

// secret_creating_controller.go ownerRef
func ownerRef(service *corev1.Service) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: "v1",
		Kind:       "Service",
		Name:       service.Name,
		UID:        service.UID,
	}
}

// secret_creating_controller.go toBaseSecret
func toBaseSecret(service *corev1.Service) *corev1.Secret {
	// Use beta annotations
	if _, ok := service.Annotations[ServingCertSecretAnnotation]; ok {
		return &corev1.Secret{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{
				Name:      service.Annotations[ServingCertSecretAnnotation],
				Namespace: service.Namespace,
				Annotations: map[string]string{
					ServiceUIDAnnotation:  string(service.UID),
					ServiceNameAnnotation: service.Name,
				},
			},
			Type: corev1.SecretTypeTLS,
		}
	}
	// Use alpha annotations
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      service.Annotations[AlphaServingCertSecretAnnotation],
			Namespace: service.Namespace,
			Annotations: map[string]string{
				AlphaServiceUIDAnnotation:  string(service.UID),
				AlphaServiceNameAnnotation: service.Name,
			},
		},
		Type: corev1.SecretTypeTLS,
	}
}

// secret_creating_controller.go certSubjectsForService
func certSubjectsForService(service *corev1.Service, dnsSuffix string) sets.Set[string] {
	res := sets.New[string]()
	serviceHostname := service.Name + "." + service.Namespace + ".svc"
	res.Insert(
		serviceHostname,
		serviceHostname+"."+dnsSuffix,
	)
	if service.Spec.ClusterIP == corev1.ClusterIPNone {
		podWildcard := "*." + service.Name + "." + service.Namespace + ".svc"
		res.Insert(
			podWildcard,
			podWildcard+"."+dnsSuffix,
		)
	}
	return res
}

// secret_creating_controller.go MakeServingCert
func MakeServingCert(dnsSuffix string, ca *crypto.CA, intermediateCACert *x509.Certificate, service *corev1.Service, lifetime time.Duration, c clock) (*crypto.TLSCertificateConfig, error) {
	subjects := certSubjectsForService(service, dnsSuffix)
	servingCert, err := ca.MakeServerCert(
		subjects,
		lifetime,
		ServiceServerCertificateExtensionV1(service.UID),
	)
	if err != nil {
		return nil, err
	}
	if !c.real {
		leaf, err := reissueAt(servingCert.Certs[0], ca, c.at, lifetime)
		if err != nil {
			return nil, err
		}
		servingCert.Certs[0] = leaf
	}
	// Including the intermediate cert will ensure that clients with a
	// stale ca bundle (containing the previous CA but not the current
	// one) will be able to trust the serving cert.
	if intermediateCACert != nil {
		servingCert.Certs = append(servingCert.Certs, intermediateCACert)
	}
	return servingCert, nil
}

// secret_creating_controller.go toRequiredSecret
func toRequiredSecret(dnsSuffix string, ca *crypto.CA, intermediateCACert *x509.Certificate, service *corev1.Service, secretCopy *corev1.Secret, lifetime time.Duration, c clock) (*crypto.TLSCertificateConfig, error) {
	servingCert, err := MakeServingCert(dnsSuffix, ca, intermediateCACert, service, lifetime, c)
	if err != nil {
		return nil, err
	}
	certBytes, keyBytes, err := servingCert.GetPEMBytes()
	if err != nil {
		return nil, err
	}
	if secretCopy.Annotations == nil {
		secretCopy.Annotations = map[string]string{}
	}
	secretCopy.Data = map[string][]byte{
		corev1.TLSCertKey:       certBytes,
		corev1.TLSPrivateKeyKey: keyBytes,
	}
	secretCopy.Annotations[AlphaServingCertExpiryAnnotation] = servingCert.Certs[0].NotAfter.Format(time.RFC3339)
	secretCopy.Annotations[ServingCertExpiryAnnotation] = servingCert.Certs[0].NotAfter.Format(time.RFC3339)
	controller.EnsureOwnerRef(secretCopy, ownerRef(service))
	return servingCert, nil
}

// secret_creating_controller.go setSecretOwnerDescription
func setSecretOwnerDescription(secret *corev1.Secret, service *corev1.Service) bool {
	changed := false
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
		changed = true
	}
	if len(secret.Annotations[OpenShiftComponent]) == 0 {
		secret.Annotations[OpenShiftComponent] = OwningJiraComponent
		changed = true
	}
	if len(secret.Annotations[OpenShiftDescription]) == 0 {
		secret.Annotations[OpenShiftDescription] = fmt.Sprintf("Secret contains a pair signed serving certificate/key that is generated by Service CA operator for service/%s with hostname %s.%s.svc and is annotated to the service with annotating a service resource with 'service.beta.openshift.io/serving-cert-secret-name: %s'. The certificate is valid for 2 years.", service.Name, service.Name, service.Namespace, secret.Name)
		changed = true
	}
	return changed
}

// secret_creating_controller.go resetServiceAnnotations
func resetServiceAnnotations(service *corev1.Service, ca *crypto.CA) {
	commonName := ca.Config.Certs[0].Subject.CommonName
	service.Annotations[AlphaServingCertCreatedByAnnotation] = commonName
	service.Annotations[ServingCertCreatedByAnnotation] = commonName
	delete(service.Annotations, AlphaServingCertErrorAnnotation)
	delete(service.Annotations, AlphaServingCertErrorNumAnnotation)
	delete(service.Annotations, ServingCertErrorAnnotation)
	delete(service.Annotations, ServingCertErrorNumAnnotation)
}

// secret_creating_controller.go generateCert, minus the API calls: the Secret it creates and the
// Service it updates.
func generateCert(ca *crypto.CA, intermediateCACert *x509.Certificate, service *corev1.Service, c clock) (*corev1.Secret, *corev1.Service, *crypto.TLSCertificateConfig, error) {
	serviceCopy := service.DeepCopy()
	if serviceCopy.Annotations == nil {
		serviceCopy.Annotations = map[string]string{}
	}
	secret := toBaseSecret(serviceCopy)
	servingCert, err := toRequiredSecret(dnsSuffix, ca, intermediateCACert, serviceCopy, secret, servingCertificateLifetime, c)
	if err != nil {
		return nil, nil, nil, err
	}
	setSecretOwnerDescription(secret, serviceCopy)
	resetServiceAnnotations(serviceCopy, ca)
	return secret, serviceCopy, servingCert, nil
}

// pkg/controller/cabundleinjector/configmap.go configMapCABundleInjector.Sync, applied to the
// ConfigMap as the user created it.
func injectConfigMap(configMap *corev1.ConfigMap, caBundle string) *corev1.ConfigMap {
	if data, ok := configMap.Data[InjectionDataKey]; ok && data == caBundle && len(configMap.Data) == 1 {
		return configMap
	}
	configMapCopy := configMap.DeepCopy()
	configMapCopy.Data = map[string]string{InjectionDataKey: caBundle}
	// set the owning-component unless someone else has claimed it.
	if len(configMapCopy.Annotations[OpenShiftComponent]) == 0 {
		configMapCopy.Annotations[OpenShiftComponent] = OwningJiraComponent
		configMapCopy.Annotations[OpenShiftDescription] = injectedConfigMapDescription
	}
	return configMapCopy
}

// reissueAt is NOT upstream code. library-go's MakeServerCert always stamps time.Now(); to honour a
// fixed clock, the certificate it made is signed again by the same CA with only notBefore/notAfter
// changed to what library-go's template would have given at that time (at-1s, at+lifetime).
// Subject (raw bytes), serial, key, SKID, AKID, SANs, key usages and the UID extension are kept; the
// extension list is checked to be identical afterwards.
func reissueAt(leaf *x509.Certificate, ca *crypto.CA, at time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	template, err := x509.ParseCertificate(leaf.Raw)
	if err != nil {
		return nil, err
	}
	template.NotBefore = at.Add(-1 * time.Second)
	template.NotAfter = at.Add(lifetime)
	// x509.CreateCertificate only re-emits extensions it knows plus ExtraExtensions.
	for _, ext := range leaf.Extensions {
		if ext.Id.Equal(OpenShiftServerSigningServiceUIDOID) {
			template.ExtraExtensions = append(template.ExtraExtensions, ext)
		}
	}
	out, err := createCertificate(template, ca.Config.Certs[0], leaf.PublicKey, ca.Config.Key)
	if err != nil {
		return nil, err
	}
	if len(out.Extensions) != len(leaf.Extensions) {
		return nil, fmt.Errorf("re-signing changed the extension count: %d -> %d", len(leaf.Extensions), len(out.Extensions))
	}
	for i := range leaf.Extensions {
		a, b := leaf.Extensions[i], out.Extensions[i]
		if !a.Id.Equal(b.Id) || a.Critical != b.Critical || !bytes.Equal(a.Value, b.Value) {
			return nil, fmt.Errorf("re-signing changed extension %d (%v)", i, a.Id)
		}
	}
	if !bytes.Equal(out.RawSubject, leaf.RawSubject) || !bytes.Equal(out.RawIssuer, leaf.RawIssuer) || out.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		return nil, fmt.Errorf("re-signing changed subject, issuer or serial")
	}
	return out, nil
}
