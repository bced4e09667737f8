//! Copies bytes both ways until either side closes. Nothing is parsed: after
//! the login the proxy is a pipe, so session state (prepared statements,
//! `SET`, temporary tables, LISTEN) behaves exactly as on a direct
//! connection.

use tokio::io::{AsyncRead, AsyncWrite};

/// Per-direction buffer. Small, because an idle pooled connection keeps its
/// buffers for as long as it lives.
pub const BUFFER: usize = 4096;

/// Splices `a` and `b`; returns when both directions are done or one fails.
pub async fn splice<A, B>(a: &mut A, b: &mut B)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // A reset from either side is the normal end of a session.
    let _ = tokio::io::copy_bidirectional_with_sizes(a, b, BUFFER, BUFFER).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_flow_both_ways_until_close() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move { splice(&mut proxy_a, &mut proxy_b).await });
        client.write_all(b"query").await.unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"query");
        let big = vec![7u8; 100_000];
        let writer = tokio::spawn(async move {
            server.write_all(&big).await.unwrap();
            server
        });
        let mut back = vec![0u8; 100_000];
        client.read_exact(&mut back).await.unwrap();
        assert!(back.iter().all(|&b| b == 7));
        let server = writer.await.unwrap();
        drop(client);
        drop(server);
        task.await.unwrap();
    }
}
