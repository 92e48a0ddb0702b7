"""Label statistics over the manifest and shards: report.json and report.html."""
