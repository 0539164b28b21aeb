//! The cache as the global allocator of this test binary, and called directly: every block
//! keeps its bytes, its alignment and its size through reallocation, across threads.

use small_block_cache::{cached_bytes, SmallBlockCache, MAX_CACHED, SHARDS, SHARD_BUDGET};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc::channel;
use std::thread;

#[global_allocator]
static ALLOCATOR: SmallBlockCache = SmallBlockCache;

fn fill(block: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: the caller owns `len` bytes at `block`.
        unsafe { block.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn holds(block: *const u8, len: usize, seed: u8) -> bool {
    // SAFETY: the caller owns `len` initialised bytes at `block`.
    (0..len).all(|i| unsafe { block.add(i).read() } == seed.wrapping_add(i as u8))
}

#[test]
fn every_size_and_alignment_keeps_its_bytes_through_realloc() {
    let sizes: &[usize] = if cfg!(miri) {
        // Miri interprets every byte written: the class edges only.
        &[1, 16, 17, 512, 513]
    } else {
        &[1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 255, 256, 257, 500, 511, 512, 513, 1000, 4096, 70_000]
    };
    let aligns: &[usize] = if cfg!(miri) { &[1, 16, 64] } else { &[1, 2, 4, 8, 16, 32, 64, 4096] };
    for &align in aligns {
        for &size in sizes {
            for &new_size in sizes {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a valid non-zero layout; every block is freed with the layout it has.
                unsafe {
                    let block = ALLOCATOR.alloc(layout);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0, "{size} bytes aligned to {align}");
                    fill(block, size, size as u8);
                    let moved = ALLOCATOR.realloc(block, layout, new_size);
                    assert!(!moved.is_null());
                    assert_eq!(moved as usize % align, 0, "{size} -> {new_size} bytes aligned to {align}");
                    let kept = size.min(new_size);
                    assert!(holds(moved, kept, size as u8), "{size} -> {new_size} (align {align}) lost bytes");
                    fill(moved, new_size, 3);
                    assert!(holds(moved, new_size, 3));
                    ALLOCATOR.dealloc(moved, Layout::from_size_align(new_size, align).unwrap());
                }
            }
        }
    }
}

#[test]
fn zeroed_blocks_are_zero_even_when_reused() {
    for size in [24, 200, MAX_CACHED, MAX_CACHED + 1, 10_000] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for _ in 0..4 {
            // SAFETY: a valid layout; the block is freed with it.
            unsafe {
                let dirty = ALLOCATOR.alloc(layout);
                fill(dirty, size, 0xAA);
                ALLOCATOR.dealloc(dirty, layout);
                let block = ALLOCATOR.alloc_zeroed(layout);
                assert!((0..size).all(|i| block.add(i).read() == 0), "{size} bytes not zeroed");
                ALLOCATOR.dealloc(block, layout);
            }
        }
    }
}

#[test]
fn the_cache_keeps_at_most_its_budget() {
    let layout = Layout::from_size_align(MAX_CACHED, 8).unwrap();
    // Twice the whole cache's budget under Miri, twenty times otherwise.
    let count = if cfg!(miri) { 1_000 } else { 10_000 };
    // SAFETY: each block is allocated and freed with the same layout.
    let blocks: Vec<*mut u8> = (0..count).map(|_| unsafe { ALLOCATOR.alloc(layout) }).collect();
    for block in blocks {
        unsafe { ALLOCATOR.dealloc(block, layout) };
    }
    let held = cached_bytes();
    assert!(held <= SHARDS * SHARD_BUDGET, "the cache holds {held} bytes, over {}", SHARDS * SHARD_BUDGET);
}

/// A block handed to another thread: a pointer, not an address, so that Miri can follow its
/// provenance.
struct Block(*mut u8);

// SAFETY: the test hands each block to exactly one thread at a time.
unsafe impl Send for Block {}

/// Eight threads allocate, stamp, check and free blocks of every cached size and some larger
/// ones, and pass a share of them to a neighbour to be checked and freed there.
#[test]
fn threads_never_get_each_others_live_blocks() {
    const THREADS: usize = 8;
    // Miri interprets every step and switches threads often: far fewer rounds find as much.
    const ROUNDS: usize = if cfg!(miri) { 100 } else { 20_000 };
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| channel::<(Block, usize, u8)>()).unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| {
            let neighbour = senders[(me + 1) % THREADS].clone();
            thread::spawn(move || {
                let mut seed = 0x9E37_79B9u32.wrapping_mul(me as u32 + 1);
                let mut random = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as usize
                };
                let mut live: Vec<(Block, usize, u8)> = Vec::new();
                for round in 0..ROUNDS {
                    let size = if random() % 16 == 0 { 513 + random() % 4000 } else { 1 + random() % MAX_CACHED };
                    let stamp = (round as u8) ^ (me as u8).wrapping_mul(31);
                    // SAFETY: freed below with the same layout.
                    let block = unsafe { ALLOCATOR.alloc(Layout::from_size_align(size, 8).unwrap()) };
                    fill(block, size, stamp);
                    live.push((Block(block), size, stamp));
                    if live.len() > 64 || random() % 3 == 0 {
                        let (block, size, stamp) = live.swap_remove(random() % live.len());
                        assert!(holds(block.0, size, stamp), "thread {me}: a live block changed");
                        if random() % 4 == 0 {
                            let _ = neighbour.send((block, size, stamp));
                        } else {
                            unsafe { ALLOCATOR.dealloc(block.0, Layout::from_size_align(size, 8).unwrap()) };
                        }
                    }
                    while let Ok((block, size, stamp)) = inbox.try_recv() {
                        assert!(holds(block.0, size, stamp), "thread {me}: a passed block changed");
                        unsafe { ALLOCATOR.dealloc(block.0, Layout::from_size_align(size, 8).unwrap()) };
                    }
                }
                for (block, size, stamp) in live {
                    assert!(holds(block.0, size, stamp), "thread {me}: a live block changed");
                    unsafe { ALLOCATOR.dealloc(block.0, Layout::from_size_align(size, 8).unwrap()) };
                }
                inbox
            })
        })
        .collect();
    drop(senders);
    let inboxes: Vec<_> = handles.into_iter().map(|h| h.join().expect("no thread panicked")).collect();
    for inbox in inboxes {
        // Blocks sent after their receiver finished its rounds.
        while let Ok((block, size, stamp)) = inbox.try_recv() {
            assert!(holds(block.0, size, stamp), "a passed block changed");
            unsafe { ALLOCATOR.dealloc(block.0, Layout::from_size_align(size, 8).unwrap()) };
        }
    }
}
