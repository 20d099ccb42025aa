//! The SSRF guard. A target's endpoint is an address chosen by an instance administrator, who is
//! not the operator: without a guard, a webhook could read the cloud metadata service, the
//! database's admin port or anything else only the deployment's network reaches.
//!
//! By default an endpoint is refused when its host is, or resolves to, an address that is
//! loopback, private (RFC 1918, unique-local), link-local (which holds the metadata addresses
//! 169.254.169.254 and fd00:ec2::254), carrier-grade NAT, unspecified, multicast, broadcast,
//! documentation or otherwise reserved, or an IPv6 form that embeds such an IPv4 address. The
//! check runs when a target is configured and again at every connection, on the addresses the
//! connection then uses (the client connects to the checked address itself, so a name that
//! resolves differently the second time — DNS rebinding — is caught). Every address a name
//! resolves to must pass, not just one. The operator may allow hosts by name or address
//! (`CAIRN_ACTIONS_ALLOWED_HOSTS`); the tests use loopback that way.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an endpoint may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Not an absolute http(s) URL with a host.
    #[error("must be an absolute http or https URL with a host: {0}")]
    Malformed(String),
    /// The host is or resolves to a forbidden address.
    #[error("{host} resolves to {addr}, a {class} address, which targets may not reach")]
    Forbidden {
        /// The host as written.
        host: String,
        /// The forbidden address.
        addr: IpAddr,
        /// Its class, in words.
        class: &'static str,
    },
    /// The host does not resolve.
    #[error("{host} does not resolve: {reason}")]
    Unresolved {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
}

/// A parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `https` or not.
    pub tls: bool,
    /// The host, as written (brackets removed from an IPv6 literal), lower-cased.
    pub host: String,
    /// The port (the scheme's default if none was written).
    pub port: u16,
    /// The path and query (`/` at least).
    pub path_and_query: String,
    /// The `Host` header value.
    pub authority: String,
}

impl Endpoint {
    /// Parses an absolute `http` or `https` URL. User info and fragments are refused.
    pub fn parse(url: &str) -> Result<Self, GuardError> {
        let malformed = || GuardError::Malformed(url.chars().take(200).collect());
        if url.len() > 2048 {
            return Err(malformed());
        }
        let uri: http::Uri = url.parse().map_err(|_| malformed())?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(malformed()),
        };
        let authority = uri.authority().ok_or_else(malformed)?;
        if authority.as_str().contains('@') || url.contains('#') {
            return Err(malformed());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(malformed());
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            tls,
            host,
            port,
            path_and_query: if path_and_query.is_empty() {
                "/".into()
            } else {
                path_and_query
            },
            authority: authority.as_str().to_owned(),
        })
    }
}

/// Which endpoints may be called.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allowed: HashSet<String>,
}

impl Guard {
    /// A guard that also allows `hosts` (names or addresses, compared lower-cased with the
    /// endpoint's host as written).
    pub fn allowing<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            allowed: hosts
                .into_iter()
                .map(|h| {
                    h.as_ref()
                        .trim()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_ascii_lowercase()
                })
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    /// Whether the operator allowed `endpoint`'s host.
    pub fn allows_host(&self, endpoint: &Endpoint) -> bool {
        self.allowed.contains(&endpoint.host)
    }

    /// Resolves `endpoint` and checks every address; the addresses a connection may use.
    pub async fn resolve(&self, endpoint: &Endpoint) -> Result<Vec<SocketAddr>, GuardError> {
        let addrs: Vec<SocketAddr> = match endpoint.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, endpoint.port)],
            Err(_) => tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| GuardError::Unresolved {
                    host: endpoint.host.clone(),
                    reason: e.to_string(),
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(GuardError::Unresolved {
                host: endpoint.host.clone(),
                reason: "no addresses".into(),
            });
        }
        if !self.allows_host(endpoint) {
            for addr in &addrs {
                if let Some(class) = forbidden(addr.ip()) {
                    return Err(GuardError::Forbidden {
                        host: endpoint.host.clone(),
                        addr: addr.ip(),
                        class,
                    });
                }
            }
        }
        Ok(addrs)
    }
}

/// The class of a forbidden address, or `None` for a public one.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (metadata)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) || (a == 192 && b == 0 && c == 0) {
        Some("documentation, benchmarking or IETF")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let seg = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local (metadata)")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some("documentation")
    } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
        // NAT64: the embedded IPv4 address decides.
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        forbidden_v4(v4).or(Some("NAT64"))
    } else if seg[0] == 0x2002 {
        // 6to4: the embedded IPv4 address decides.
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        forbidden_v4(v4)
    } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
        Some("IPv4-compatible")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_forbidden_and_public_ones_are_not() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            let ip: IpAddr = bad.parse().expect(bad);
            assert!(forbidden(ip).is_some(), "{bad} should be forbidden");
        }
        for good in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = good.parse().expect(good);
            assert_eq!(forbidden(ip), None, "{good}");
        }
    }

    #[tokio::test]
    async fn the_guard_refuses_loopback_unless_allowed_and_parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080/hook?x=1").expect("parses");
        assert_eq!(
            (e.host.as_str(), e.port, e.path_and_query.as_str()),
            ("127.0.0.1", 8080, "/hook?x=1")
        );
        assert!(matches!(
            Guard::default().resolve(&e).await,
            Err(GuardError::Forbidden {
                class: "loopback",
                ..
            })
        ));
        assert_eq!(
            Guard::allowing(["127.0.0.1"])
                .resolve(&e)
                .await
                .expect("allowed")
                .len(),
            1
        );
        let localhost = Endpoint::parse("http://localhost/").expect("parses");
        assert!(matches!(
            Guard::default().resolve(&localhost).await,
            Err(GuardError::Forbidden { .. })
        ));
        let v6 = Endpoint::parse("https://[::1]/x").expect("parses");
        assert_eq!((v6.host.as_str(), v6.port, v6.tls), ("::1", 443, true));
        for bad in [
            "ftp://a/",
            "http:///x",
            "http://u:p@host/",
            "/relative",
            "http://a/#f",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(GuardError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
