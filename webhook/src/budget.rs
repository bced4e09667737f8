//! The budget of request body bytes held in memory across all connections,
//! and reading one body within it and within the body timeout.
//!
//! Bytes are charged as they arrive, so a client must really send them to
//! hold them. A body that cannot be charged is refused at once (503) rather
//! than queued. A quarter of the budget is kept for small bodies: a body past
//! [`SMALL_BODY`] may only use the other three quarters, so clients that send
//! big bodies slowly cannot starve the ordinary, few-kilobyte reviews.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;

/// The API server never sends more than 3 MiB.
pub const BODY_LIMIT: usize = 3 * 1024 * 1024;
/// Bodies up to this size may use the reserved quarter of the budget.
pub const SMALL_BODY: usize = 64 * 1024;

/// Request bytes held in memory, against a fixed total.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    total: usize,
    reserve: usize,
}

/// Whether a body that will hold `held_after` bytes may take `n` more when
/// `used` of `total` are taken; bodies past [`SMALL_BODY`] leave `reserve`.
pub fn admits(used: usize, n: usize, held_after: usize, total: usize, reserve: usize) -> bool {
    let limit = if held_after <= SMALL_BODY {
        total
    } else {
        total.saturating_sub(reserve)
    };
    used.checked_add(n).is_some_and(|after| after <= limit)
}

impl ByteBudget {
    pub fn new(total: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            total,
            reserve: total / 4,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty charge for one body; what it takes is given back on drop.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// The bytes one body holds.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<ByteBudget>,
    held: usize,
}

impl Charge {
    /// Takes `n` more bytes, or returns false (taking nothing) when the
    /// budget cannot give them.
    pub fn take(&mut self, n: usize) -> bool {
        let ByteBudget {
            used,
            total,
            reserve,
        } = &*self.budget;
        let held_after = self.held.saturating_add(n);
        let taken = used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
            admits(u, n, held_after, *total, *reserve).then(|| u + n)
        });
        if taken.is_ok() {
            self.held = held_after;
        }
        taken.is_ok()
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is over 3 MiB, the API server's limit")]
    TooLarge,
    #[error("request body not received within {0:?} (--body-timeout)")]
    Timeout(Duration),
    #[error("the webhook already holds its limit of request bytes ({0} bytes, --max-buffered-bytes); retry")]
    Busy(usize),
    #[error("cannot read the request body: {0}")]
    Read(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// A whole body, and its charge against the budget (held until dropped).
#[derive(Debug)]
pub struct Received {
    pub bytes: Bytes,
    pub charge: Charge,
}

/// Reads a whole body of at most [`BODY_LIMIT`] bytes within `timeout`,
/// charging every byte to `budget`.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    budget: &Arc<ByteBudget>,
    timeout: Duration,
) -> Result<Received, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut charge = budget.charge();
    let mut chunks: Vec<Bytes> = Vec::new();
    let collect = async {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if charge.held() + data.len() > BODY_LIMIT {
                return Err(BodyError::TooLarge);
            }
            if !charge.take(data.len()) {
                return Err(BodyError::Busy(budget.total()));
            }
            chunks.push(data);
        }
        Ok(())
    };
    tokio::time::timeout(timeout, collect)
        .await
        .map_err(|_| BodyError::Timeout(timeout))??;
    let bytes = match chunks.len() {
        1 => chunks.swap_remove(0),
        _ => {
            let mut all = Vec::with_capacity(charge.held());
            for c in chunks {
                all.extend_from_slice(&c);
            }
            Bytes::from(all)
        }
    };
    Ok(Received { bytes, charge })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn small_bodies_may_use_the_reserve_big_ones_may_not() {
        // 32 MiB with 8 MiB kept: a big body stops at 24 MiB in use.
        let (total, reserve) = (32 * MIB, 8 * MIB);
        assert!(admits(0, 3 * MIB, 3 * MIB, total, reserve));
        assert!(admits(21 * MIB, 3 * MIB, 3 * MIB, total, reserve));
        assert!(!admits(21 * MIB + 1, 3 * MIB, 3 * MIB, total, reserve));
        // A small body still fits up to the total.
        assert!(admits(24 * MIB, 10_000, 10_000, total, reserve));
        assert!(admits(total - 10_000, 10_000, 10_000, total, reserve));
        assert!(!admits(total - 9_999, 10_000, 10_000, total, reserve));
        // The body that grows past SMALL_BODY loses the reserve.
        assert!(admits(24 * MIB, 1, SMALL_BODY, total, reserve));
        assert!(!admits(24 * MIB, 1, SMALL_BODY + 1, total, reserve));
        assert!(!admits(usize::MAX, 1, 1, total, reserve));
    }

    #[test]
    fn charges_are_given_back_on_drop() {
        let budget = Arc::new(ByteBudget::new(8 * MIB));
        let mut a = budget.charge();
        assert!(a.take(3 * MIB));
        assert!(a.take(2 * MIB));
        let mut b = budget.charge();
        // 5 of 8 MiB used; a big body may use 6.
        assert!(!b.take(2 * MIB));
        assert_eq!(b.held(), 0);
        assert!(b.take(SMALL_BODY));
        assert_eq!(budget.used(), 5 * MIB + SMALL_BODY);
        drop(a);
        assert_eq!(budget.used(), SMALL_BODY);
        assert!(b.take(3 * MIB));
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    fn headers(len: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = len {
            h.insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
        }
        h
    }

    /// A body fed by a channel: it ends when the sender is dropped.
    struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

    impl axum::body::HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|c| c.map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        (tx, Body::new(Chunks(rx)))
    }

    #[tokio::test]
    async fn chunks_are_joined_and_charged_until_dropped() {
        let budget = Arc::new(ByteBudget::new(8 * MIB));
        let (tx, body) = channel_body();
        for part in ["{\"a\":", "1", "}"] {
            tx.send(Bytes::from(part)).await.unwrap();
        }
        drop(tx);
        let got = read_body(&headers(None), body, &budget, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(&got.bytes[..], b"{\"a\":1}");
        assert_eq!(got.charge.held(), 7);
        assert_eq!(budget.used(), 7);
        drop(got);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_times_out_and_gives_its_bytes_back() {
        let budget = Arc::new(ByteBudget::new(8 * MIB));
        let (tx, body) = channel_body();
        tx.send(Bytes::from(vec![b'x'; 1000])).await.unwrap();
        let start = tokio::time::Instant::now();
        let err = read_body(&headers(Some(5000)), body, &budget, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::Timeout(_)), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(err.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(err.to_string().contains("--body-timeout"), "{err}");
        assert_eq!(budget.used(), 0);
        drop(tx);
    }

    #[tokio::test]
    async fn over_3_mib_is_refused_declared_or_not() {
        let budget = Arc::new(ByteBudget::new(8 * MIB));
        // Declared: refused before reading anything.
        let (tx, body) = channel_body();
        let err = read_body(
            &headers(Some(BODY_LIMIT + 1)),
            body,
            &budget,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge), "{err}");
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Chunked: refused at the chunk that crosses the limit.
        let (tx2, body) = channel_body();
        for _ in 0..3 {
            tx2.send(Bytes::from(vec![b'x'; MIB])).await.unwrap();
        }
        tx2.send(Bytes::from_static(b"x")).await.unwrap();
        let err = read_body(&headers(None), body, &budget, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge), "{err}");
        assert_eq!(budget.used(), 0);
        drop((tx, tx2));
        // Exactly 3 MiB is read.
        let (tx, body) = channel_body();
        for _ in 0..3 {
            tx.send(Bytes::from(vec![b'x'; MIB])).await.unwrap();
        }
        drop(tx);
        let got = read_body(
            &headers(Some(BODY_LIMIT)),
            body,
            &budget,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(got.bytes.len(), BODY_LIMIT);
    }

    #[tokio::test]
    async fn a_full_budget_refuses_big_bodies_at_once_but_not_small_ones() {
        let budget = Arc::new(ByteBudget::new(4 * MIB));
        let mut hog = budget.charge();
        assert!(hog.take(3 * MIB));
        let (tx, body) = channel_body();
        tx.send(Bytes::from(vec![b'x'; MIB])).await.unwrap();
        let err = read_body(&headers(None), body, &budget, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::Busy(_)), "{err}");
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.to_string().contains("--max-buffered-bytes"), "{err}");
        let (tx2, body) = channel_body();
        tx2.send(Bytes::from(vec![b'y'; 5000])).await.unwrap();
        drop(tx2);
        let got = read_body(&headers(None), body, &budget, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(got.bytes.len(), 5000);
        drop(tx);
    }
}
