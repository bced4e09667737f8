#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rds_iam_fuzz::credentials::check(data));
