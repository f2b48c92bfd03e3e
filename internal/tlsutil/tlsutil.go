// Package tlsutil builds the TLS configurations of issue 8: a certificate that is re-read
// from its files when they change (no restart to rotate), the HTTP API's server config,
// the client config nodes use to forward to each other over HTTPS, and the mutual-TLS
// configs of the Raft transport (both ends present a certificate signed by the cluster CA).
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Reloader serves a certificate and key pair from files, re-reading them when their
// modification time or size changes (checked at most once a second, on handshakes). A
// pair that fails to load leaves the previous one in use.
type Reloader struct {
	certFile, keyFile string
	mu                sync.Mutex
	cert              *tls.Certificate
	stamp             string
	checked           time.Time
	// OnError is told about a failed reload (the old certificate stays); may be nil.
	OnError func(error)
}

// NewReloader loads the pair once; it fails if the files are not a valid pair.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("both a certificate and a key file are required")
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) fileStamp() (string, error) {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d:%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s, nil
}

func (r *Reloader) load() error {
	stamp, err := r.fileStamp()
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("loading %s / %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &c, stamp
	return nil
}

// Current returns the certificate, reloading it first if its files changed.
func (r *Reloader) Current() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= time.Second {
		r.checked = time.Now()
		if st, err := r.fileStamp(); err == nil && st != r.stamp {
			if err := r.load(); err != nil && r.OnError != nil {
				r.OnError(err)
			}
		}
	}
	return r.cert
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}

// GetClientCertificate implements tls.Config.GetClientCertificate.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}

// LoadCA reads a PEM bundle of CA certificates.
func LoadCA(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}

// Server is the HTTP API's config: TLS 1.2 or later, the certificate from r. Clients are
// not asked for certificates (they authenticate with bearer tokens).
func Server(r *Reloader) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

// Client is what a node uses to call another node's API: the peer must present a
// certificate signed by ca (nil: the system roots); r, when set, is offered as a client
// certificate.
func Client(ca *x509.CertPool, r *Reloader) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca}
	if r != nil {
		c.GetClientCertificate = r.GetClientCertificate
	}
	return c
}

// MutualServer is the Raft listener's config: TLS 1.3, and the dialing node must present a
// certificate signed by ca.
func MutualServer(r *Reloader, ca *x509.CertPool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: r.GetCertificate,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca}
}

// MutualClient is the Raft dialer's config: TLS 1.3, the peer's certificate is verified
// against ca, and r is presented.
func MutualClient(r *Reloader, ca *x509.CertPool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetClientCertificate: r.GetClientCertificate, RootCAs: ca}
}
