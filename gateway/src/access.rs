//! Who may call what, compiled from the config: per endpoint, the union of its security
//! groups and its project's tokens; server-wide, the trusted proxies and the admin token.
//!
//! Both live behind `ArcSwap`s (`Endpoint::access`, `Shared::access`), so a reload
//! ([`crate::reload`]) applies to the next request without touching open connections.

use std::net::IpAddr;
use std::sync::Arc;

use ipfilter::{PortRange, Rule, RuleSet, Source};
use metrics::Counter;

use crate::config::{self, Config};
use crate::metrics::caller_counter;
use crate::token;

/// The access policy of one endpoint.
#[derive(Debug)]
pub struct EndpointAccess {
    /// The attached groups' rules, compiled; `None` when no group is attached (open).
    pub rules: Option<RuleSet>,
    /// `public = true`: no token needed.
    pub public: bool,
    /// The project's tokens.
    pub credentials: Vec<Credential>,
}

/// One project token, as the data plane checks it.
#[derive(Debug)]
pub struct Credential {
    /// The token's name: the caller identity in logs and metrics.
    pub name: Arc<str>,
    sha256: [u8; 32],
    /// `portico_caller_requests_total` for this token on this endpoint.
    pub requests: Counter,
}

impl EndpointAccess {
    /// Compiles `endpoint`'s policy from `config` (which must hold its groups and project).
    pub fn build(config: &Config, endpoint: &config::Endpoint) -> EndpointAccess {
        let rules = (!endpoint.security_groups.is_empty()).then(|| {
            let rules = config
                .security_groups
                .iter()
                .filter(|group| endpoint.security_groups.contains(&group.id))
                .flat_map(|group| &group.inbound)
                .map(|rule| Rule {
                    ports: rule.ports,
                    source: rule.source,
                });
            RuleSet::compile(rules)
        });
        let credentials = config
            .project(&endpoint.project)
            .map(|project| {
                project
                    .tokens
                    .iter()
                    .map(|token| Credential {
                        name: Arc::from(token.name.as_str()),
                        sha256: token.sha256,
                        requests: caller_counter(&endpoint.id, &token.name),
                    })
                    .collect()
            })
            .unwrap_or_default();
        EndpointAccess {
            rules,
            public: endpoint.public,
            credentials,
        }
    }

    /// Whether a client at `addr` may reach the endpoint on listener port `port`.
    pub fn admits(&self, addr: IpAddr, port: u16) -> bool {
        self.rules
            .as_ref()
            .is_none_or(|rules| rules.allows(addr, port))
    }

    /// The credential `token` is, if any. Every credential is compared, in constant time.
    pub fn verify(&self, token: &str) -> Option<&Credential> {
        let presented = token::sha256(token);
        let mut found = None;
        for credential in &self.credentials {
            if token::constant_time_eq(&presented, &credential.sha256) {
                found = Some(credential);
            }
        }
        found
    }
}

/// Server-wide access settings.
#[derive(Debug)]
pub struct ServerAccess {
    trusted_proxies: RuleSet,
    /// SHA-256 of the admin bearer token, when one is configured.
    pub admin_token: Option<[u8; 32]>,
    /// `server.metrics_public`.
    pub metrics_public: bool,
}

impl ServerAccess {
    /// Compiles the server-wide settings.
    pub fn build(server: &config::Server) -> ServerAccess {
        let trusted = server.trusted_proxies.iter().map(|cidr| Rule {
            ports: PortRange::ALL,
            source: Source::Cidr(*cidr),
        });
        ServerAccess {
            trusted_proxies: RuleSet::compile(trusted),
            admin_token: server.admin_token_sha256,
            metrics_public: server.metrics_public,
        }
    }

    /// Whether `addr` is one of `server.trusted_proxies`.
    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        // Trusted-proxy rules cover every port; any port number asks the same question.
        self.trusted_proxies.allows(addr, 1)
    }

    /// Whether `token` is the admin token (always false when none is configured).
    pub fn is_admin(&self, token: &str) -> bool {
        self.admin_token
            .is_some_and(|hash| token::constant_time_eq(&token::sha256(token), &hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const TOKEN_CI: &str = "ptk_ci";
    const TOKEN_OPS: &str = "ptk_ops";

    fn config(extra_endpoint_keys: &str) -> Config {
        let text = format!(
            r#"
[server]
trusted_proxies = ["10.0.0.0/8", "fd00::/8"]
admin_token_sha256 = "{admin}"

[[project]]
id = "p"
tokens = [{{ name = "ci", sha256 = "{ci}" }}, {{ name = "ops", sha256 = "{ops}" }}]

[[security_group]]
id = "office"
inbound = [{{ protocol = "tcp", port_range = [8000, 8100], source = "192.0.2.0/24" }}]

[[security_group]]
id = "vpn"
inbound = [{{ protocol = "tcp", source = "2001:db8::/32" }}]

[[endpoint]]
id = "e"
project = "p"
{extra_endpoint_keys}

[endpoint.workers]
kind = "static"
urls = ["http://127.0.0.1:9"]
"#,
            admin = token::sha256_hex("admin"),
            ci = token::sha256_hex(TOKEN_CI),
            ops = token::sha256_hex(TOKEN_OPS),
        );
        Config::from_toml_str(&text, Path::new(".")).expect("valid config")
    }

    fn access(extra: &str) -> EndpointAccess {
        let config = config(extra);
        EndpointAccess::build(&config, &config.endpoints[0])
    }

    /// No group attached: every source on every port.
    #[test]
    fn no_groups_is_open() {
        let access = access("");
        assert!(access.rules.is_none());
        assert!(access.admits("198.51.100.7".parse().unwrap(), 443));
    }

    /// Several groups: the union of their rules, ports included; mapped IPv4 matches.
    #[test]
    fn groups_are_a_union() {
        let access = access(r#"security_groups = ["office", "vpn"]"#);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(access.admits(ip("192.0.2.9"), 8000));
        assert!(access.admits(ip("::ffff:192.0.2.9"), 8100));
        assert!(!access.admits(ip("192.0.2.9"), 8101));
        assert!(!access.admits(ip("192.0.3.9"), 8050));
        assert!(access.admits(ip("2001:db8::5"), 1));
        assert!(!access.admits(ip("2001:db9::5"), 8050));
    }

    /// Only the project's tokens verify, and the match names the token.
    #[test]
    fn verifies_project_tokens() {
        let access = access("");
        assert_eq!(&*access.verify(TOKEN_CI).unwrap().name, "ci");
        assert_eq!(&*access.verify(TOKEN_OPS).unwrap().name, "ops");
        assert!(access.verify("ptk_other").is_none());
        assert!(access.verify("").is_none());
        assert!(!access.public);
        assert!(self::access("public = true").public);
    }

    /// Trusted proxies and the admin token.
    #[test]
    fn server_access() {
        let config = config("");
        let server = ServerAccess::build(&config.server);
        assert!(server.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(server.is_trusted("::ffff:10.1.2.3".parse().unwrap()));
        assert!(server.is_trusted("fd00::1".parse().unwrap()));
        assert!(!server.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(server.is_admin("admin"));
        assert!(!server.is_admin("admin "));
    }
}
