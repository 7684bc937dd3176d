//! How long finding a request's route takes (`Profile::route`, once per request): profiles
//! of 10, 100 and 1,000 routes shaped like a REST API's (`/api/v1/things17/[^/]+`, each with
//! a method), for a path the last route matches, one the first matches, and one none
//! does. `cargo bench -p conduit-proxy --bench route_matching`.

use conduit_proxy::http::routes::{BudgetPolicy, Profile, ProfileRoute};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;

fn profile(routes: usize) -> Profile {
    let routes = (0..routes)
        .map(|i| {
            let method = if i % 2 == 0 {
                Method::GET
            } else {
                Method::POST
            };
            let route = ProfileRoute {
                name: format!("{method} /api/v1/things{i}/{{id}}").into(),
                method: Some(method),
                timeout: None,
                retryable: true,
                retry_grpc: 1 << 14,
            };
            (route, format!("/api/v1/things{i}/[^/]+"))
        })
        .collect();
    Profile::new(routes, BudgetPolicy::default()).expect("routes compile")
}

fn route_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [10, 100, 1000] {
        let p = profile(n);
        let last_method = if (n - 1) % 2 == 0 {
            Method::GET
        } else {
            Method::POST
        };
        let last = format!("/api/v1/things{}/abc123", n - 1);
        group.bench_with_input(BenchmarkId::new("last", n), &n, |b, _| {
            b.iter(|| black_box(p.route(&last_method, black_box(&last))))
        });
        group.bench_with_input(BenchmarkId::new("first", n), &n, |b, _| {
            b.iter(|| black_box(p.route(&Method::GET, black_box("/api/v1/things0/abc123"))))
        });
        group.bench_with_input(BenchmarkId::new("none", n), &n, |b, _| {
            b.iter(|| black_box(p.route(&Method::GET, black_box("/static/app.js"))))
        });
    }
    group.finish();
}

criterion_group!(benches, route_matching);
criterion_main!(benches);
