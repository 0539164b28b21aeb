//! A small-block cache in front of the system allocator.
//!
//! musl's allocator takes one global lock for every `malloc` and `free` and spends a couple of
//! hundred instructions inside it; a registration costs about thirty of each, so on musl the
//! allocator was a third of the registry's CPU with one client and, with 32 clients, threads
//! queued on its lock. This cache keeps freed blocks of up to [`MAX_CACHED`] bytes on free
//! lists and hands them out again, so most allocations never reach musl at all.
//!
//! The lists are kept in [`SHARDS`] shards rather than per thread: a thread-local cache would
//! strand its blocks when its thread ends (the registry starts a thread per connection), and a
//! shard needs no destructor. A thread picks its shard from the address of its stack, so the
//! same thread keeps coming back to the same lists. A shard is taken with one atomic swap and
//! never waited for: when another thread holds it, the call goes to the system allocator.
//! Each shard holds at most [`SHARD_BUDGET`] bytes, so the cache as a whole never keeps more
//! than `SHARDS * SHARD_BUDGET` bytes from the rest of the program.
//!
//! Blocks are requested from the system allocator rounded up to their size class, so that any
//! cached block of a class can serve any request of that class.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr::{self, null_mut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Size classes are multiples of this; it is also the largest alignment served from the cache
/// (musl's `malloc` aligns to 16).
const GRANULE: usize = 16;
/// Blocks larger than this go straight to the system allocator.
pub const MAX_CACHED: usize = 512;
const CLASSES: usize = MAX_CACHED / GRANULE;
/// Number of shards; a power of two.
pub const SHARDS: usize = 16;
/// Bytes of free blocks one shard may keep.
pub const SHARD_BUDGET: usize = 16 * 1024;

/// The allocator: `#[global_allocator] static ALLOCATOR: SmallBlockCache = SmallBlockCache;`.
pub struct SmallBlockCache;

/// A free block; its first word links to the next free block of its class.
struct FreeBlock {
    next: *mut FreeBlock,
}

struct Lists {
    heads: [*mut FreeBlock; CLASSES],
    bytes: usize,
}

#[repr(align(64))] // one cache line each: two cores working on two shards do not share lines
struct Shard {
    taken: AtomicBool,
    lists: UnsafeCell<Lists>,
}

// SAFETY: `lists` is only touched by the thread that set `taken` (see `Shard::with`).
unsafe impl Sync for Shard {}

#[allow(clippy::declare_interior_mutable_const)] // each array element is its own shard
const EMPTY_SHARD: Shard =
    Shard { taken: AtomicBool::new(false), lists: UnsafeCell::new(Lists { heads: [null_mut(); CLASSES], bytes: 0 }) };

static SHARD_TABLE: [Shard; SHARDS] = [EMPTY_SHARD; SHARDS];

impl Shard {
    /// Runs `f` on the lists if no other thread holds them; `None` if one does.
    fn with<T>(&self, f: impl FnOnce(&mut Lists) -> T) -> Option<T> {
        if self.taken.swap(true, Ordering::Acquire) {
            return None;
        }
        // SAFETY: the swap above made this thread the only holder until the store below.
        let result = f(unsafe { &mut *self.lists.get() });
        self.taken.store(false, Ordering::Release);
        Some(result)
    }
}

/// The shard of the calling thread: threads' stacks lie at least 64 KiB apart, so the stack's
/// address, hashed, spreads threads over the shards and keeps each on one.
fn my_shard() -> &'static Shard {
    let marker = 0u8;
    let window = ptr::addr_of!(marker) as usize >> 16;
    let hash = window.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize);
    &SHARD_TABLE[hash >> (usize::BITS - SHARDS.trailing_zeros())]
}

/// The size class of a layout, if the cache serves it.
fn class_of(layout: Layout) -> Option<usize> {
    (layout.size() <= MAX_CACHED && layout.align() <= GRANULE && layout.size() > 0)
        .then(|| (layout.size() - 1) / GRANULE)
}

/// What the system allocator is asked for when a block of `class` is made.
fn class_layout(class: usize) -> Layout {
    // SAFETY: a non-zero multiple of 16 with alignment 16 is a valid layout.
    unsafe { Layout::from_size_align_unchecked((class + 1) * GRANULE, GRANULE) }
}

impl SmallBlockCache {
    fn take(class: usize) -> *mut u8 {
        my_shard()
            .with(|lists| {
                let head = lists.heads[class];
                if !head.is_null() {
                    // SAFETY: every pointer on a list is a free block of this class.
                    lists.heads[class] = unsafe { (*head).next };
                    lists.bytes -= class_layout(class).size();
                }
                head.cast::<u8>()
            })
            .unwrap_or(null_mut())
    }

    /// Keeps a freed block; false if the shard is busy or full.
    fn keep(block: *mut u8, class: usize) -> bool {
        let size = class_layout(class).size();
        my_shard()
            .with(|lists| {
                if lists.bytes + size > SHARD_BUDGET {
                    return false;
                }
                let block = block.cast::<FreeBlock>();
                // SAFETY: the caller gave the block up; it is at least 16 bytes, 16-aligned.
                unsafe { block.write(FreeBlock { next: lists.heads[class] }) };
                lists.heads[class] = block;
                lists.bytes += size;
                true
            })
            .unwrap_or(false)
    }
}

/// Bytes the cache holds now, over all shards (for tests and curiosity; it waits for each
/// shard in turn).
pub fn cached_bytes() -> usize {
    SHARD_TABLE
        .iter()
        .map(|shard| loop {
            if let Some(bytes) = shard.with(|lists| lists.bytes) {
                break bytes;
            }
            std::hint::spin_loop();
        })
        .sum()
}

// SAFETY: every block handed out is either the system allocator's own answer for the layout,
// or a block of at least the layout's size class, aligned to 16, that was freed and not handed
// out since: the lists own their blocks exclusively.
unsafe impl GlobalAlloc for SmallBlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else { return System.alloc(layout) };
        let block = Self::take(class);
        if block.is_null() {
            System.alloc(class_layout(class))
        } else {
            block
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class_of(layout).is_none() {
            return System.alloc_zeroed(layout);
        }
        let block = self.alloc(layout);
        if !block.is_null() {
            block.write_bytes(0, layout.size());
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(class) if Self::keep(block, class) => {}
            Some(class) => System.dealloc(block, class_layout(class)),
            None => System.dealloc(block, layout),
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller promises new_size, rounded up to the alignment, fits an isize.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class_of(layout), class_of(new_layout)) {
            (Some(old), Some(new)) if old == new => block,
            (None, None) => System.realloc(block, layout, new_size),
            _ => {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            }
        }
    }
}
