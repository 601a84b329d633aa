//! Route lookup must not allocate: counted with a counting global allocator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/synthetic.rs"]
mod synthetic;

use portier::translate::{translate, TranslateOptions};

#[test]
fn route_lookup_does_not_allocate() {
    let config = translate(&synthetic::cluster(10_000), &TranslateOptions::default());
    assert_eq!(config.routes.len(), 10_000);
    let mut found = 0;
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            for (host, path) in synthetic::HITS.iter().chain(synthetic::MISSES) {
                found += usize::from(config.router.lookup(host, path).is_some());
            }
        }
    });
    assert_eq!(found, 100 * synthetic::HITS.len(), "every hit found, every miss missed");
    assert_eq!(info.count_total, 0, "lookups allocated: {info:?}");
}

#[test]
fn the_counter_sees_allocations() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(vec![1u8; 64]);
    });
    assert!(info.count_total >= 1, "the allocation counter works");
}
