"""One module per search strategy behind hwnas.search.base.Strategy."""
