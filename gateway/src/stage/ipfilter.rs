//! ipfilter: the endpoint's security groups, on the client address and the listener port.
//! Runs before auth, so a denied source learns nothing about tokens.

use std::net::IpAddr;

use crate::access::EndpointAccess;
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::metrics::DenyReason;

/// Refuses a client the endpoint's groups do not admit on listener port `port`.
pub fn check(
    endpoint: &Endpoint,
    access: &EndpointAccess,
    client: IpAddr,
    port: u16,
) -> Result<(), ProxyError> {
    if access.admits(client, port) {
        return Ok(());
    }
    endpoint.metrics.denied(DenyReason::SecurityGroup);
    Err(ProxyError::Denied)
}
