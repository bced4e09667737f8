//! One tokio runtime per test process, for the servers and stubs a test
//! runs beside its blocking code (`rt().spawn(...)`, `rt().block_on(...)`).

use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// The process's runtime: two worker threads, so a stub answers while
/// another one is busy.
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build the test runtime")
    })
}
