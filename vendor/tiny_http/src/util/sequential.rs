use std::io::Result as IoResult;
use std::io::Write;

use std::sync::{Arc, Condvar, Mutex};

pub struct SequentialWriterBuilder<W>
where
    W: Write + Send,
{
    writer: Arc<Mutex<W>>,
    next_trigger: Option<Taker<()>>,
}

pub struct SequentialWriter<W>
where
    W: Write + Send,
{
    trigger: Option<Taker<()>>,
    writer: Arc<Mutex<W>>,
    on_finish: Giver<()>,
}

impl<W: Write + Send> SequentialWriterBuilder<W> {
    pub fn new(writer: W) -> SequentialWriterBuilder<W> {
        SequentialWriterBuilder {
            writer: Arc::new(Mutex::new(writer)),
            next_trigger: None,
        }
    }
}

impl<W: Write + Send> Iterator for SequentialWriterBuilder<W> {
    type Item = SequentialWriter<W>;
    fn next(&mut self) -> Option<SequentialWriter<W>> {
        let (tx, rx) = handoff();
        let mut next_next_trigger = Some(rx);
        ::std::mem::swap(&mut next_next_trigger, &mut self.next_trigger);

        Some(SequentialWriter {
            trigger: next_next_trigger,
            writer: self.writer.clone(),
            on_finish: tx,
        })
    }
}

impl<W: Write + Send> SequentialWriter<W> {
    /// Waits until the writer before this one has finished (once; later calls return at once).
    fn wait_turn(&mut self) {
        if let Some(v) = self.trigger.as_mut() {
            v.take().unwrap()
        }
        self.trigger = None;
    }
}

impl<W: Write + Send> Write for SequentialWriter<W> {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.wait_turn();
        self.writer.lock().unwrap().write(buf)
    }

    // dynamic-ports patch: forwarded, so a head and a large body can go out in one `writev`.
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> IoResult<usize> {
        self.wait_turn();
        self.writer.lock().unwrap().write_vectored(bufs)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.wait_turn();
        self.writer.lock().unwrap().flush()
    }
}

impl<W> Drop for SequentialWriter<W>
where
    W: Write + Send,
{
    fn drop(&mut self) {
        self.on_finish.give(());
    }
}

/// dynamic-ports patch: a one-shot hand-over between two answers of a connection, in place of
/// an mpsc channel, which allocated a 2 KiB block and a 128-byte-aligned counter per request
/// (so two trips through musl's allocator and, for the block, often an mmap). The giver never
/// makes a system call unless the taker is already waiting.
struct Handoff<T> {
    state: Mutex<Slot<T>>,
    given: Condvar,
}

struct Slot<T> {
    value: Option<T>,
    /// The giver went away without giving: the taker gets `None`.
    closed: bool,
    taker_waits: bool,
}

pub struct Giver<T> {
    shared: Arc<Handoff<T>>,
    done: bool,
}

pub struct Taker<T> {
    shared: Arc<Handoff<T>>,
}

fn handoff<T>() -> (Giver<T>, Taker<T>) {
    let shared = Arc::new(Handoff {
        state: Mutex::new(Slot { value: None, closed: false, taker_waits: false }),
        given: Condvar::new(),
    });
    (Giver { shared: shared.clone(), done: false }, Taker { shared })
}

impl<T> Handoff<T> {
    fn settle(&self, value: Option<T>) {
        let mut slot = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(value) => slot.value = Some(value),
            None => slot.closed = true,
        }
        if slot.taker_waits {
            drop(slot);
            self.given.notify_one();
        }
    }
}

impl<T> Giver<T> {
    fn give(&mut self, value: T) {
        if !self.done {
            self.done = true;
            self.shared.settle(Some(value));
        }
    }
}

impl<T> Drop for Giver<T> {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.shared.settle(None);
        }
    }
}

impl<T> Taker<T> {
    /// Waits for the value; `None` if the giver went away without giving one.
    fn take(&self) -> Option<T> {
        let mut slot = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(value) = slot.value.take() {
                return Some(value);
            }
            if slot.closed {
                return None;
            }
            slot.taker_waits = true;
            slot = self.shared.given.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}
