"""Presentation, apart from the model code: plotly figures of traces (`figures`), files and images of them
(`export`), and the offline bertviz views (`bertviz_offline`). Nothing here runs a model but
`bertviz_offline.segment_attention`, which asks the recurrence for one segment's attention."""
