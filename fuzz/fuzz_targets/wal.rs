#![no_main]

#[global_allocator]
static ALLOC: ringkv_fuzz::alloc::TrackingAlloc = ringkv_fuzz::alloc::TrackingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_fuzz::wal(data));
