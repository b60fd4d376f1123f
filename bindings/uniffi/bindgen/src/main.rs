//! uniffi's generator, pinned to the uniffi of this crate: run it in library mode on the
//! built `libagentvm_uniffi.so` (`generate --library <so> --language python --out-dir <dir>`).

fn main() {
    uniffi::uniffi_bindgen_main()
}
