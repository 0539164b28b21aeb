//! Alone in its test binary, so that no other thread moves the figures: a freed small block
//! is kept and handed out again, a large one is not kept.

use small_block_cache::{cached_bytes, SmallBlockCache, MAX_CACHED};
use std::alloc::{GlobalAlloc, Layout};

#[test]
fn a_freed_small_block_is_kept_and_handed_out_again() {
    let cache = SmallBlockCache;
    let layout = Layout::from_size_align(40, 8).unwrap();
    let same_class = Layout::from_size_align(48, 16).unwrap();
    let large = Layout::from_size_align(MAX_CACHED + 1, 8).unwrap();
    // SAFETY: every block is freed once, with a layout of its size class.
    unsafe {
        let block = cache.alloc(layout);
        let before = cached_bytes();
        cache.dealloc(block, layout);
        assert_eq!(cached_bytes(), before + 48, "a freed 40-byte block is kept as a 48-byte one");
        let again = cache.alloc(same_class);
        assert_eq!(again, block, "the kept block serves the next request of its class");
        assert_eq!(cached_bytes(), before);
        cache.dealloc(again, same_class);

        let big = cache.alloc(large);
        let before = cached_bytes();
        cache.dealloc(big, large);
        assert_eq!(cached_bytes(), before, "blocks over {MAX_CACHED} bytes go back to the system");
    }
}
