//! Signing one token (criterion). `cargo bench -p rds-iam-tokenagent --bench sign`

use std::hint::black_box;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use criterion::{criterion_group, criterion_main, Criterion};
use rds_iam_tokenagent::pgpass;
use rds_iam_tokenagent::signer::{sign_token, TokenSpec};

fn bench(c: &mut Criterion) {
    let spec = TokenSpec {
        host: "mydb.c9akciq32.us-east-1.rds.amazonaws.com".into(),
        port: 5432,
        user: "app_user".into(),
        region: "us-east-1".into(),
    };
    let plain = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "bench",
    );
    let session = Credentials::new(
        "ASIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        Some("IQoJb3JpZ2luX2VjE".repeat(60)),
        None,
        "bench",
    );
    c.bench_function("sign_token", |b| {
        b.iter(|| sign_token(black_box(&spec), black_box(&plain), SystemTime::now()))
    });
    c.bench_function("sign_token_with_session_token", |b| {
        b.iter(|| sign_token(black_box(&spec), black_box(&session), SystemTime::now()))
    });
    c.bench_function("sign_token_and_pgpass_line", |b| {
        b.iter(|| {
            let t =
                sign_token(black_box(&spec), black_box(&session), SystemTime::now()).expect("sign");
            pgpass::line(&spec.host, spec.port, &spec.user, t.token.expose()).expect("line")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
