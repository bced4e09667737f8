//! What the agent itself parses of the credential providers' answers. The
//! SDK (aws-config) parses the STS, container-endpoint and IMDS answers;
//! ours are the code around it:
//!
//! - `credhttp::cap`, the body cap on the providers' HTTP client, which
//!   reads the `Content-Length` header: an answer over the cap is refused
//!   or fails while read, and no read ever yields more than the cap;
//! - `creds::error_chain` / `withhold_raw`, which cut the raw HTTP answer
//!   (holding the secret key) out of an SDK error's text before it is
//!   logged: whatever wraps a real SDK `Response` whose body carries a
//!   secret, the text never holds the secret, and it keeps what every
//!   level of the chain said before the raw answer;
//! - `creds::provider_name`, read from the credentials' `Debug` form: it is
//!   the provider's name whatever the access key ID and session token hold,
//!   and never the secret.
//!
//! Input: byte 0 is the cap (0 to 255 bytes), byte 1 picks whether a
//! `Content-Length` header is sent, the HTTP status and the provider; then
//! the header's value, the body, the text before the raw answer, an outer
//! error message and the access key ID, separated by 0xFF bytes.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use rds_iam_tokenagent::credhttp::cap;
use rds_iam_tokenagent::creds::{error_chain, provider_name};

/// A secret access key as a credential answer carries it.
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// How the `Debug` form of an HTTP message or body starts.
const RAW: [&str; 3] = ["Response {", "Request {", "SdkBody {"];
/// Provider names as the SDK writes them.
const PROVIDERS: [&str; 6] = [
    "Environment",
    "Profile",
    "WebIdentityToken",
    "EcsContainer",
    "Ec2InstanceMetadata",
    "AssumeRoleProvider",
];

pub fn check(data: &[u8]) {
    let (max, flags, rest) = match data {
        [max, flags, rest @ ..] => (usize::from(*max), *flags, rest),
        _ => return,
    };
    let [length, body, prefix, outer, key_id] = super::split_fields::<5>(rest);
    let length = (flags & 1 == 1).then(|| String::from_utf8_lossy(length));
    body_cap(max, length.as_deref(), body);

    let texts = [prefix, outer, key_id].map(String::from_utf8_lossy);
    if texts.iter().any(|t| t.contains(SECRET)) {
        return;
    }
    let [prefix, outer, key_id] = texts;
    let status = [200, 400, 403, 404, 500, 503][usize::from(flags >> 1) % 6];
    raw_answers_withheld(status, &prefix, &outer, body);
    let provider = PROVIDERS[usize::from(flags >> 4) % PROVIDERS.len()];
    let creds = Credentials::new(
        key_id.as_ref(),
        SECRET,
        Some(key_id.to_string()),
        None,
        provider,
    );
    assert_eq!(provider_name(&creds), provider, "{creds:?}");
}

fn response(status: u16, body: SdkBody) -> HttpResponse {
    let status = StatusCode::try_from(status).expect("a valid status");
    HttpResponse::new(status, body)
}

/// Polls a future that never waits (the body is in memory).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory body is read at once"),
    }
}

fn body_cap(max: usize, length: Option<&str>, body: &[u8]) {
    let mut r = response(200, SdkBody::from(body.to_vec()));
    if let Some(v) = length {
        if r.headers_mut()
            .try_insert("content-length", v.to_owned())
            .is_err()
        {
            return; // not a header value an HTTP client would hand over
        }
    }
    // A plain decimal length over the cap. (hyper refuses a response whose
    // length does not fit 64 bits, so no such header reaches the cap.)
    let declared_over = length
        .map(str::trim)
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok())
        .map(|n| n > max as u64);
    let read = match cap(r, max) {
        Err(_) => {
            assert!(length.is_some(), "refused without a declared length");
            assert!(
                declared_over != Some(false),
                "{length:?} is within the cap of {max}"
            );
            return;
        }
        Ok(r) => {
            assert!(
                declared_over != Some(true),
                "{length:?} is over the cap of {max}"
            );
            ready(r.into_body().collect())
        }
    };
    match read {
        Ok(got) => {
            let got = got.to_bytes();
            assert!(
                got.len() <= max,
                "read {} bytes past the cap of {max}",
                got.len()
            );
            assert_eq!(&got[..], body);
        }
        Err(e) => {
            assert!(
                body.len() > max,
                "a body of {} bytes within the cap of {max} failed: {e}",
                body.len()
            );
            assert!(
                e.to_string().contains(&format!("larger than {max} bytes")),
                "{e}"
            );
        }
    }
}

/// An error whose text is `msg`, caused by `source`.
#[derive(Debug)]
struct Level {
    msg: String,
    source: Option<Box<Level>>,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Level {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as _)
    }
}

fn raw_answers_withheld(status: u16, prefix: &str, outer: &str, extra: &[u8]) {
    // A credential answer as IMDS or the container endpoint send it, in an
    // SDK error that prints the raw response (as aws-config's IMDS error
    // does: "error response from IMDS (code: 500). Response { .. }").
    let mut answer =
        format!("{{\"AccessKeyId\":\"ASIAEXAMPLE\",\"SecretAccessKey\":\"{SECRET}\",\"Token\":\"")
            .into_bytes();
    answer.extend_from_slice(extra);
    answer.extend_from_slice(b"\"}");
    let raw = response(status, SdkBody::from(answer));
    let inner = Level {
        msg: format!("{prefix}{raw:?}"),
        source: None,
    };
    let chain = Level {
        msg: outer.to_owned(),
        source: Some(Box::new(inner)),
    };
    let text = error_chain(&chain);
    assert!(!text.contains(SECRET), "the secret is logged: {text}");
    for marker in RAW {
        assert!(
            !text.contains(marker),
            "a raw HTTP message is logged: {text}"
        );
    }
    // What each level said is kept when it holds no raw message.
    for said in [outer, prefix] {
        if !RAW.iter().any(|m| said.contains(m)) {
            assert!(text.contains(said), "{said:?} is lost: {text}");
        }
    }
}
