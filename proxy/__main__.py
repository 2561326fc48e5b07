from proxy.version import check_mitmproxy

# Before proxy.main imports mitmproxy: an unsupported release stops here, with a clear error,
# not somewhere inside mitmproxy's internals (or not at all).
check_mitmproxy()

from proxy.main import main  # noqa: E402

raise SystemExit(main())
