package call

// URL policy (issue 8): which participant URLs the coordinator may call, so that it cannot
// be used for server-side request forgery. Checked twice: when a transaction is submitted
// (CheckURL, a 400 with the reason) and when a connection is opened (Control, on the
// resolved IP, so that a name that resolves to a forbidden address later — DNS
// rebinding — is still refused).

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Policy says which participant addresses may be called. The zero value allows every
// host except the ones always refused: link-local addresses (169.254.0.0/16, fe80::/10,
// which include the cloud metadata services 169.254.169.254 and fd00:ec2::254), the
// metadata host names, unspecified, multicast and broadcast addresses. Loopback is allowed
// unless DenyLoopback is set.
type Policy struct {
	// Allow, when not empty, is the allowlist: a host must match one entry. An entry is
	// a host name ("pay.internal"), a domain suffix (".example.com" or "*.example.com":
	// any name under it), an IP, or a CIDR ("10.0.0.0/8"). CIDRs are checked against the
	// resolved address too: when Allow holds only IPs and CIDRs, every address dialed must
	// be in one of them.
	Allow []string
	// DenyLoopback refuses 127.0.0.0/8, ::1 and "localhost".
	DenyLoopback bool
	// Self lists the coordinator's own addresses, host:port (its HTTP API and Raft, bind
	// and advertised), which participants may never be: such a URL would make the
	// coordinator call itself. A host of 0.0.0.0, ::, or "" stands for every local address.
	Self []string

	hosts    []string // exact names
	suffixes []string // ".example.com"
	prefixes []netip.Prefix
	selfEPs  []selfEP
	local    map[netip.Addr]bool // this machine's interface addresses
	once     sync.Once
	err      error
}

type selfEP struct {
	host string // "" = any local address
	port int
}

// metadataHosts are cloud metadata service names, refused whatever the allowlist says.
var metadataHosts = map[string]bool{
	"metadata.google.internal":   true,
	"metadata":                   true,
	"metadata.azure.internal":    true,
	"instance-data":              true, // EC2
	"instance-data.ec2.internal": true,
}

var (
	linkLocal4 = netip.MustParsePrefix("169.254.0.0/16")
	linkLocal6 = netip.MustParsePrefix("fe80::/10")
	ec2Meta6   = netip.MustParseAddr("fd00:ec2::254")
)

// Compile checks the policy's entries; CheckURL and Control call it on first use.
func (p *Policy) Compile() error {
	if p == nil {
		return nil
	}
	p.once.Do(func() { p.err = p.compile() })
	return p.err
}

func (p *Policy) compile() error {
	p.hosts, p.suffixes, p.prefixes, p.selfEPs = nil, nil, nil, nil
	for _, e := range p.Allow {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
			continue
		case strings.Contains(e, "/"):
			pr, err := netip.ParsePrefix(e)
			if err != nil {
				return fmt.Errorf("allowlist entry %q: %v", e, err)
			}
			p.prefixes = append(p.prefixes, pr.Masked())
		case strings.HasPrefix(e, "*."):
			p.suffixes = append(p.suffixes, e[1:])
		case strings.HasPrefix(e, "."):
			p.suffixes = append(p.suffixes, e)
		default:
			if a, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				a = a.Unmap()
				p.prefixes = append(p.prefixes, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			p.hosts = append(p.hosts, strings.TrimSuffix(e, "."))
		}
	}
	for _, s := range p.Self {
		h, port, err := net.SplitHostPort(s)
		if err != nil {
			return fmt.Errorf("own address %q: %v", s, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n <= 0 {
			continue // port 0: not known yet
		}
		h = strings.ToLower(h)
		if a, err := netip.ParseAddr(h); err == nil && a.IsUnspecified() {
			h = ""
		}
		p.selfEPs = append(p.selfEPs, selfEP{host: h, port: n})
	}
	p.local = map[netip.Addr]bool{}
	if len(p.selfEPs) > 0 {
		addrs, _ := net.InterfaceAddrs()
		for _, ia := range addrs {
			if n, ok := ia.(*net.IPNet); ok {
				if a, ok := netip.AddrFromSlice(n.IP); ok {
					p.local[a.Unmap()] = true
				}
			}
		}
	}
	return nil
}

// ErrForbidden wraps every refusal.
var ErrForbidden = errors.New("participant address forbidden by policy")

func forbidden(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrForbidden, fmt.Sprintf(format, args...))
}

// CheckURL checks a participant URL before anything is stored or logged. The error says
// why a URL is refused, in words a client can act on.
func (p *Policy) CheckURL(raw string) error {
	if p == nil {
		p = &Policy{}
	}
	if err := p.Compile(); err != nil {
		return err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return forbidden("unparsable URL")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	portN, _ := strconv.Atoi(port)
	if host == "" {
		return forbidden("URL has no host")
	}
	if metadataHosts[host] {
		return forbidden("%s is a cloud metadata service", host)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap().WithZone("")
		if err := p.checkAddr(a, portN); err != nil {
			return err
		}
		if len(p.Allow) > 0 && !p.inPrefixes(a) {
			return forbidden("%s is not in the participant allowlist", host)
		}
		return nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		if p.DenyLoopback {
			return forbidden("%s is a loopback name and loopback participants are disabled", host)
		}
	}
	if p.isSelf(host, portN) {
		return forbidden("%s:%d is this coordinator's own address", host, portN)
	}
	if len(p.Allow) == 0 || p.nameAllowed(host) {
		return nil
	}
	if len(p.hosts) == 0 && len(p.suffixes) == 0 && len(p.prefixes) > 0 {
		// A CIDR-only allowlist: the name is checked when it is resolved (Control).
		return nil
	}
	return forbidden("%s is not in the participant allowlist", host)
}

func (p *Policy) nameAllowed(host string) bool {
	for _, h := range p.hosts {
		if host == h {
			return true
		}
	}
	for _, s := range p.suffixes {
		if strings.HasSuffix(host, s) && len(host) > len(s) {
			return true
		}
	}
	return false
}

func (p *Policy) inPrefixes(a netip.Addr) bool {
	for _, pr := range p.prefixes {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

func (p *Policy) isSelf(host string, port int) bool {
	for _, s := range p.selfEPs {
		if s.port != port {
			continue
		}
		if s.host == host || host == "localhost" {
			return true
		}
		// An address of this machine on a port this coordinator listens on.
		if a, err := netip.ParseAddr(host); err == nil && (a.Unmap().IsLoopback() || p.local[a.Unmap()]) {
			return true
		}
	}
	return false
}

// checkAddr applies the rules that hold for every IP, at submission and at dial time.
func (p *Policy) checkAddr(a netip.Addr, port int) error {
	// Drop an IPv6 zone ("fe80::1%eth0"): netip.Prefix.Contains is false for zoned
	// addresses, which would let link-local through (found by FuzzCheckURL).
	a = a.Unmap().WithZone("")
	switch {
	case !a.IsValid():
		return forbidden("invalid address")
	case a.IsUnspecified():
		return forbidden("%s is the unspecified address", a)
	case a == ec2Meta6 || a == netip.MustParseAddr("169.254.169.254"):
		return forbidden("%s is a cloud metadata service", a)
	case linkLocal4.Contains(a) || linkLocal6.Contains(a) || a.IsLinkLocalMulticast():
		return forbidden("%s is link-local", a)
	case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return forbidden("%s is multicast or broadcast", a)
	case a.IsLoopback() && p.DenyLoopback:
		return forbidden("%s is loopback and loopback participants are disabled", a)
	case p.isSelf(a.String(), port):
		return forbidden("%s is this coordinator's own address", netip.AddrPortFrom(a, uint16(port)))
	}
	return nil
}

// CheckDial checks an address about to be dialed ("ip:port", already resolved).
func (p *Policy) CheckDial(address string) error {
	if p == nil {
		p = &Policy{}
	}
	if err := p.Compile(); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return forbidden("cannot parse dialed address %q", address)
	}
	a := ap.Addr().Unmap().WithZone("")
	if err := p.checkAddr(a, int(ap.Port())); err != nil {
		return err
	}
	if len(p.prefixes) > 0 && len(p.hosts) == 0 && len(p.suffixes) == 0 && !p.inPrefixes(a) {
		return forbidden("%s is not in the participant allowlist", a)
	}
	return nil
}

// Control is a net.Dialer Control function: it runs after the name is resolved and
// before the connection is made, so it sees the IP actually dialed.
func (p *Policy) Control(_, address string, _ syscall.RawConn) error {
	return p.CheckDial(address)
}

// control is Control, or nil for a nil policy (no dial-time check).
func (p *Policy) control() func(network, address string, c syscall.RawConn) error {
	if p == nil {
		return nil
	}
	return p.Control
}
