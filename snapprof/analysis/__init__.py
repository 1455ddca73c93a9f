"""Analysis side: capture frames (pandas), statistics, comparisons."""
