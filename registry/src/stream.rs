//! Listings too large to keep rendered (see `views`), written as they are rendered: a batch of
//! records is read from the store, rendered and written, then the next. What one answer holds
//! is a batch and a chunk, whatever the registry's size; the store's lock is held for one
//! batch at a time and never while writing, so a reader that stalls blocks no one else.
//!
//! Each batch is consistent in itself, and the listing as a whole reflects the watch index it
//! is answered with or a later one: a watcher that asks again with that index is answered at
//! once if anything changed meanwhile, so it misses nothing.

use crate::page;
use crate::reply::Render;
use crate::store::{Filter, Store};
use common::wire::Endpoint;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Records read from the store per batch, and so per hold of its lock: about 55 KB of JSON or
/// 85 KB of page, so a batch is about one chunk (`reply::PIECE`).
pub const BATCH: usize = 256;

/// Renders every record `filter` shows, a batch at a time, with `each` writing one record to
/// a scratch buffer that goes out once per batch; returns how many records there were and
/// how many bytes they took.
fn batches(
    store: &Store,
    filter: &Filter,
    out: &mut dyn Write,
    mut each: impl FnMut(&mut Vec<u8>, &Endpoint, bool),
) -> io::Result<(usize, usize)> {
    let mut scratch = Vec::new();
    let (mut records, mut bytes) = (0, 0);
    let mut after: Option<String> = None;
    // Bounded: each batch starts after the last Name the one before it looked at, and the
    // store holds at most its -max-endpoints.
    loop {
        let batch = store.batch(filter, after.as_deref(), BATCH);
        for record in &batch.records {
            each(&mut scratch, record, records == 0);
            records += 1;
        }
        bytes += scratch.len();
        out.write_all(&scratch)?;
        scratch.clear();
        match batch.next {
            Some(next) => after = Some(next),
            None => return Ok((records, bytes)),
        }
    }
}

/// Bytes per record of the last large rendering, when it had enough records to say.
fn measured(sizes: &AtomicUsize, (records, bytes): (usize, usize)) {
    if records >= 64 {
        sizes.store(bytes / records, Relaxed);
    }
}

/// `GET /endpoints` with a filter: the same bytes as serializing the whole list at once.
pub struct Json {
    pub store: Arc<Store>,
    pub filter: Filter,
    /// Where to leave the bytes per record this rendering measured.
    pub per_record: Arc<AtomicUsize>,
}

impl Render for Json {
    fn render(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(b"[")?;
        let sizes = batches(&self.store, &self.filter, out, |scratch, record, first| {
            if !first {
                scratch.push(b',');
            }
            // Serializing owned strings and numbers to memory cannot fail.
            let _ = serde_json::to_writer(&mut *scratch, record);
        })?;
        measured(&self.per_record, sizes);
        out.write_all(b"]")
    }
}

/// The page.
pub struct Page {
    pub store: Arc<Store>,
    /// The watch index the page says it shows, as its answer's header does.
    pub index: u64,
    pub version: &'static str,
    pub banner: Option<String>,
    pub per_record: Arc<AtomicUsize>,
}

impl Render for Page {
    fn render(&self, out: &mut dyn Write) -> io::Result<()> {
        // The counts above the table are taken first; a record that comes or goes while the
        // rows are read makes them differ by that record, as a page rendered a moment earlier
        // or later would.
        let counts = self.store.counts();
        let mut html = String::new();
        page::head(&mut html, counts, self.index, self.banner.as_deref());
        out.write_all(html.as_bytes())?;
        if counts.iter().sum::<usize>() > 0 {
            let mut row = String::new();
            let sizes = batches(&self.store, &Filter::default(), out, |scratch, record, _| {
                row.clear();
                page::row(&mut row, record);
                scratch.extend_from_slice(row.as_bytes());
            })?;
            measured(&self.per_record, sizes);
        }
        html.clear();
        page::tail(&mut html, counts, self.version);
        out.write_all(html.as_bytes())
    }
}
