//! Route: `/project/{p}/endpoint/{id}/{rest}` → the endpoint, and where `/{rest}` (the
//! worker's path) starts.

use std::sync::Arc;

use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::routes::Routes;

/// The endpoint a request is for, and the byte offset in `path` where the worker's path
/// starts (`path.len()` when it is empty, i.e. the worker's `/`).
pub fn resolve(
    routes: &Routes,
    listener: usize,
    path: &str,
) -> Result<(Arc<Endpoint>, usize), ProxyError> {
    let not_found = || ProxyError::NoRoute {
        path: path.to_string(),
    };
    let (project, id, rest) = split(path).ok_or_else(not_found)?;
    let endpoint = routes.get(project, id).ok_or_else(not_found)?;
    // An endpoint not served on this listener is indistinguishable from none at all.
    if !endpoint.serves(listener) {
        return Err(not_found());
    }
    Ok((Arc::clone(endpoint), path.len() - rest.len()))
}

/// Splits `/project/{p}/endpoint/{id}{rest}` where `rest` is empty or starts with `/`.
fn split(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/project/")?;
    let (project, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("endpoint/")?;
    let (id, rest) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    (!project.is_empty() && !id.is_empty()).then_some((project, id, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths split into project, endpoint and the worker path; anything else is no route.
    #[test]
    fn splits_paths() {
        assert_eq!(
            split("/project/p1/endpoint/e1/v1/chat/completions"),
            Some(("p1", "e1", "/v1/chat/completions"))
        );
        assert_eq!(split("/project/p1/endpoint/e1"), Some(("p1", "e1", "")));
        assert_eq!(split("/project/p1/endpoint/e1/"), Some(("p1", "e1", "/")));
        for bad in [
            "/",
            "/project/p1",
            "/project/p1/endpoint/",
            "/project//endpoint/e1",
            "/project/p1/endpoints/e1",
            "/projects/p1/endpoint/e1",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }
}
