//! The openids WeChat knows for the simulated mini-program: users who logged in, accepted a
//! subscribe-message template or were given a card. Shared by the mini-program half (subscribe
//! messages go to these only) and the WeChat Pay half (a JSAPI order's payer must be one: an
//! openid belongs to one appid).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub(crate) struct KnownOpenids(Arc<Mutex<HashSet<String>>>);

impl KnownOpenids {
    pub(crate) fn insert(&self, openid: &str) {
        self.lock().insert(openid.to_string());
    }

    pub(crate) fn contains(&self, openid: &str) -> bool {
        self.lock().contains(openid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
