//! The routing table: `(project, endpoint)` → [`Endpoint`]. Built from a [`Config`] and
//! swapped whole on reload, so a request sees one consistent table.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;

/// foldhash: several times cheaper than SipHash on short keys. Lookups only ever probe a
/// table built from the config, so keys a client chooses cannot degrade it.
type Fast = foldhash::fast::RandomState;
use crate::endpoint::Endpoint;

/// Every endpoint, by project and id.
#[derive(Debug, Default)]
pub struct Routes {
    by_project: HashMap<String, HashMap<String, Arc<Endpoint>, Fast>, Fast>,
    all: Vec<Arc<Endpoint>>,
}

impl Routes {
    /// Builds the table for `config`.
    pub fn build(config: &Config) -> Routes {
        let listener_names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        Routes::from_endpoints(
            config
                .endpoints
                .iter()
                .map(|endpoint| Arc::new(Endpoint::new(config, endpoint.clone(), &listener_names)))
                .collect(),
        )
    }

    /// The table of `endpoints` (a reload keeps some and adds others).
    pub fn from_endpoints(endpoints: Vec<Arc<Endpoint>>) -> Routes {
        let mut routes = Routes::default();
        for endpoint in endpoints {
            routes
                .by_project
                .entry(endpoint.project().to_string())
                .or_default()
                .insert(endpoint.id().to_string(), Arc::clone(&endpoint));
            routes.all.push(endpoint);
        }
        routes
    }

    /// The endpoint `id` of project `project`.
    pub fn get(&self, project: &str, id: &str) -> Option<&Arc<Endpoint>> {
        self.by_project.get(project)?.get(id)
    }

    /// Every endpoint, in config order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.all
    }
}
