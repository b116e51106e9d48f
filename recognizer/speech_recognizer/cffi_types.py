"""The C types of the cffi libraries the recognizer calls from several threads, realized once, on one thread.

cffi builds a library's C types lazily, on their first use, and on CPython with the GIL that is not
safe from two threads at once: a garbage collection during one thread's realization of a type can
run Python code that lets another thread realize the same type, and cffi then aborts the process
(``realize_c_type.c``: ``realize_c_type_or_func_lock_held: Assertion ... failed``; python-cffi/cffi#271,
in cffi 1.17 as in 2.x). The start-up warm-up's threads each make their first recognizer at the same
moment, and the decoder lanes and REST decodes then call Vosk and libsndfile from threads: a recognizer
pod aborted so at its warm-up in a test run (three pods starting at once on two cores). Realizing every
function and named type of both libraries first, on the thread that starts the others, leaves nothing
for them to race on.
"""

from __future__ import annotations

import importlib

#: (module, its FFI, its library): the cffi libraries the recognizer calls, by their modules' own names
#: (private to vosk and soundfile; the locks pin both, and tests/recognizer/test_cffi_types.py fails if a
#: version names them otherwise).
LIBRARIES = (("vosk", "_ffi", "_c"), ("soundfile", "_ffi", "_snd"))


def realize() -> dict[str, int]:
    """Realize every function, typedef, struct and union of :data:`LIBRARIES`; the number realized per module.

    Call it before starting threads that use them (milliseconds; it imports both modules)."""
    done: dict[str, int] = {}
    for module_name, ffi_name, lib_name in LIBRARIES:
        module = importlib.import_module(module_name)
        ffi, lib = getattr(module, ffi_name), getattr(module, lib_name)
        names = [name for name in dir(lib) if not name.startswith("__")]
        for name in names:
            getattr(lib, name)  # a function's first access builds its type
        typedefs, structs, unions = ffi.list_types()
        types = [*typedefs, *(f"struct {s}" for s in structs), *(f"union {u}" for u in unions)]
        for name in types:
            ffi.typeof(name)
        done[module_name] = len(names) + len(types)
    return done
