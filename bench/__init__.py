"""The benchmark harness: ``python -m bench <command>`` (``python -m bench --help`` lists the commands).

Not part of the product. Modules import each other as ``bench.<module>`` and the library as ``scalearn_cli``; this
package's own import is stdlib-only, so ``bench.peer_adapters`` also runs in the peer library's separate venv.
"""
