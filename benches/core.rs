//! Micro-benchmarks of the pure core: route lookup, translation, SNI certificate resolution and
//! redirect Location building. `cargo bench --bench core`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "synthetic.rs"]
mod synthetic;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portier::state::ObjectKey;
use portier::tls::{CertStore, StoredCert};
use portier::translate::{translate, TranslateOptions};

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for n in [10, 1_000, 10_000] {
        let config = translate(&synthetic::cluster(n), &TranslateOptions::default());
        assert_eq!(config.routes.len(), n);
        for (kind, queries) in [("hit", synthetic::HITS), ("miss", synthetic::MISSES)] {
            for (host, path) in queries {
                if kind == "hit" {
                    assert!(config.router.lookup(host, path).is_some(), "{host}{path}");
                }
            }
            group.bench_with_input(BenchmarkId::new(kind, n), &config, |b, config| {
                b.iter(|| {
                    for (host, path) in queries {
                        black_box(config.router.lookup(black_box(host), black_box(path)));
                    }
                })
            });
        }
    }
    group.finish();
}

fn translate_10000(c: &mut Criterion) {
    let state = synthetic::cluster(10_000);
    let options = TranslateOptions::default();
    let mut group = c.benchmark_group("translate");
    group.sample_size(20);
    group.bench_function("10000_ingresses", |b| b.iter(|| black_box(translate(black_box(&state), &options))));
    group.finish();
}

fn sni(c: &mut Criterion) {
    let generated = rcgen::generate_simple_self_signed(vec!["bench.example".to_string()]).unwrap();
    let loaded =
        portier::tls::load_pem_pair(generated.cert.pem().as_bytes(), generated.signing_key.serialize_pem().as_bytes())
            .unwrap();
    let mut store = CertStore::default();
    for i in 0..1_000 {
        let names =
            if i % 2 == 0 { vec![format!("site{i}.example.com")] } else { vec![format!("*.team{i}.example.com")] };
        store.add(StoredCert {
            secret: ObjectKey::new("default", format!("tls-{i}")),
            names,
            info: loaded.info.clone(),
            loaded: loaded.clone(),
        });
    }
    let names = ["site500.example.com", "app.team501.example.com", "unknown.example.com"];
    for name in names.iter().take(2) {
        assert!(store.find(name).is_some());
    }
    c.bench_function("sni/1000_certificates", |b| {
        b.iter(|| {
            for name in names {
                black_box(store.find(black_box(name)));
            }
        })
    });
}

fn redirect_location(c: &mut Criterion) {
    c.bench_function("redirect/https_location", |b| {
        b.iter(|| {
            black_box(portier::proxy::middleware::https_location(black_box("node.example:80"), 443, "/k8s/api?x=1"))
        })
    });
}

criterion_group!(benches, lookup, translate_10000, sni, redirect_location);
criterion_main!(benches);
