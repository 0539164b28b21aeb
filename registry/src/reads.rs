//! The reads that may wait for a change (a listing, one record, the page): what to render, and
//! rendering it with the watch index it reflects. Asked now by `api`, or later by a blocking
//! query once the index moves.

use crate::reply::{Body, Reply, HTML, JSON};
use crate::route::Route;
use crate::state::Registry;
use crate::store::Filter;
use crate::views::View;
use common::wire::{INDEX_HEADER, WARMING_HEADER};
use std::time::Duration;

/// A read to answer, now or once the store changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    List(Filter),
    One(String),
    Page,
}

impl Read {
    /// The route it was asked on, for metrics.
    pub fn route(&self) -> Route {
        match self {
            Read::List(_) => Route::Endpoints,
            Read::One(_) => Route::OneEndpoint,
            Read::Page => Route::Page,
        }
    }
}

/// Marks a listing taken while the registry warms up.
pub fn with_warming(reply: Reply, registry: &Registry) -> Reply {
    match registry.store.warming() {
        Some(left) => {
            reply.with_header(WARMING_HEADER, common::duration::format(Duration::from_secs(left.as_secs() + 1)))
        }
        None => reply,
    }
}

/// Renders a read's answer, with the watch index it reflects.
pub fn answer(registry: &Registry, read: &Read) -> Reply {
    let reply = match read {
        Read::List(filter) => view_reply(JSON, registry.views.endpoints(&registry.store, filter)),
        Read::Page => view_reply(HTML, registry.views.page(&registry.store)),
        Read::One(name) => {
            let index = registry.store.index();
            match registry.store.get(name) {
                Some(record) => Reply::json(200, &record),
                None => not_found(name),
            }
            .with_header(INDEX_HEADER, index.to_string())
        }
    };
    with_warming(reply, registry)
}

/// A listing's or the page's answer, with the watch index it reflects.
fn view_reply(content_type: &'static str, view: View) -> Reply {
    let (reply, index) = match view {
        View::Whole(rendered) => (Reply::shared(content_type, rendered.body), rendered.index),
        View::Streamed { index, body } => {
            (Reply { status: 200, content_type, headers: Vec::new(), body: Body::Streamed(body) }, index)
        }
    };
    reply.with_header(INDEX_HEADER, index.to_string())
}

/// The answer for a Name that is not registered.
pub fn not_found(name: &str) -> Reply {
    Reply::error(404, format!("no endpoint named {name:?} is registered"))
}
