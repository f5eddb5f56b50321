"""Presentation, apart from the model code: plotly figures of traces (`figures`), files and images of them
(`export`), and the offline bertviz views (`bertviz_offline`). Nothing here runs a model but
`bertviz_offline.segment_attention`, which asks the recurrence for one segment's attention."""

# The largest image an export draws, here apart from plotly so that the command line can name the limits in
# its help without importing plotly (`rmt train` and `rmt eval` run on machines that have none).
MAX_IMAGE_SIDE = 16384  # pixels of a side, after --scale (Chromium draws nothing larger)
MAX_IMAGE_PIXELS = 2**26  # 8192 x 8192 pixels, after --scale
