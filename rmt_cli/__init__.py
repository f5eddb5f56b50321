"""The `rmt` command line, above the library: it imports `rmt_core`, `probes` and `app`; none of them imports it."""
