//! The quantized tensor decoders: a format, a shape and block bytes, decoded
//! on the CPU (the reference every kernel is checked against) and repacked
//! into the words the GPU kernels read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lottery_fuzz::tensor_decode(data);
});
