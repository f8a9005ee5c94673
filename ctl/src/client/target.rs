//! [`NodeTarget`]: where a node is, and the name its certificate must hold.

use std::fmt;
use std::net::IpAddr;

use rustls::pki_types::ServerName;

/// A node to connect to: where it is, and the name its certificate must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    label: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

/// A `--node` or `--server-name` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The address is not `HOST:PORT`.
    #[error("--node {addr:?}: {reason} (write HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443)")]
    Address {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The name to verify the certificate against is not a DNS name or IP address.
    #[error(
        "{flag} {name:?}: not a DNS name or IP address (pass --server-name with a name in the node's certificate)"
    )]
    ServerName {
        /// The flag the name came from: `--node` (its host part) or `--server-name`.
        flag: &'static str,
        /// The name.
        name: String,
    },
}

impl NodeTarget {
    /// Parses `HOST:PORT` (`[IPV6]:PORT` for IPv6). The certificate must hold
    /// `server_name` if given, else the host part of the address.
    pub fn parse(addr: &str, server_name: Option<&str>) -> Result<Self, TargetError> {
        let (host, port) = split_host_port(addr)?;
        let server_name = match server_name {
            Some(name) => parse_server_name("--server-name", name)?,
            None => parse_server_name("--node", host)?,
        };
        Ok(Self {
            label: addr.to_owned(),
            host: host.to_owned(),
            port,
            server_name,
        })
    }

    /// The node as the user named it, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The host part of the address: a DNS name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The name the node's certificate is verified against.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }
}

impl fmt::Display for NodeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

fn split_host_port(addr: &str) -> Result<(&str, u16), TargetError> {
    let error = |reason| TargetError::Address {
        addr: addr.to_owned(),
        reason,
    };
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| error("missing ']'"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(error("not an IPv6 address inside [ ]"));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| error("missing port"))?;
        (host, port)
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| error("missing port"))?;
        if host.contains(':') {
            return Err(error("IPv6 addresses need brackets"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(error("missing host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(error("port must be a number from 1 to 65535")),
        Ok(port) => Ok((host, port)),
    }
}

fn parse_server_name(flag: &'static str, name: &str) -> Result<ServerName<'static>, TargetError> {
    let bare = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_owned()).map_err(|_| TargetError::ServerName {
        flag,
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        let cases = [
            ("127.0.0.1:8443", "127.0.0.1", 8443),
            ("localhost:1", "localhost", 1),
            ("node-1.dice.example:65535", "node-1.dice.example", 65535),
            ("[::1]:8443", "::1", 8443),
        ];
        for (addr, host, port) in cases {
            let target = NodeTarget::parse(addr, None).expect(addr);
            assert_eq!((target.host(), target.port()), (host, port), "{addr}");
            assert_eq!(target.label(), addr);
        }
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        let cases = [
            ("127.0.0.1", "missing port"),
            ("localhost:", "port must be a number"),
            ("localhost:0", "port must be a number"),
            ("localhost:99999", "port must be a number"),
            (":8443", "missing host"),
            ("::1:8443", "IPv6 addresses need brackets"),
            ("[::1]8443", "missing port"),
            ("[::1:8443", "missing ']'"),
            ("[node]:8443", "not an IPv6 address"),
        ];
        for (addr, reason) in cases {
            let error = NodeTarget::parse(addr, None).expect_err(addr).to_string();
            assert!(error.starts_with("--node "), "{error}");
            assert!(error.contains(reason), "{addr}: {error}");
            assert!(error.contains("(write HOST:PORT"), "{error}");
        }
    }

    #[test]
    fn server_name_defaults_to_the_host() {
        let name = |addr, over| {
            NodeTarget::parse(addr, over)
                .expect("valid")
                .server_name()
                .to_str()
                .into_owned()
        };
        assert_eq!(name("127.0.0.1:8443", None), "127.0.0.1");
        assert_eq!(name("[::1]:8443", None), "::1");
        assert_eq!(name("node-1.example:8443", None), "node-1.example");
        assert_eq!(
            name("10.0.0.7:8443", Some("node-7.example")),
            "node-7.example"
        );
        assert_eq!(name("localhost:8443", Some("10.0.0.7")), "10.0.0.7");
        assert!(matches!(
            NodeTarget::parse("127.0.0.1:1", Some("::1"))
                .expect("valid")
                .server_name(),
            ServerName::IpAddress(_)
        ));

        let error = NodeTarget::parse("bad_host!:8443", None).expect_err("invalid");
        assert!(
            error.to_string().starts_with("--node \"bad_host!\""),
            "{error}"
        );
        let error = NodeTarget::parse("localhost:8443", Some("no spaces")).expect_err("invalid");
        assert!(error.to_string().starts_with("--server-name"), "{error}");
    }
}
