"""Reports: markdown sections, plots, headline figures."""
