;; noop: the smallest ABI v1 plugin. It accepts every record and emits nothing; `make bench` runs it to
;; measure the cost of the host/guest boundary alone (encoding the record into guest memory, fuel and
;; deadline set-up, one call in and out).
(module
  (memory (export "memory") 2)
  (func (export "millrace_abi_version") (result i32) i32.const 1)
  ;; One static input buffer at 1 KiB, large enough for records up to 127 KiB.
  (func (export "millrace_input") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 130048)) (then unreachable))
    i32.const 1024)
  (func (export "millrace_process") (param $ptr i32) (param $len i32) (result i32) i32.const 0))
