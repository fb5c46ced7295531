"""Tools around the core: answering a question about a video (``answer``), model loading,
benchmark, comparison, evaluation, analysis, pictures, demo, web page, video reading and timing.
The core (``algorithm``, ``methods``, ``adapters``, ``engine``, ``ledger``, ``report``, ``config``,
``registry``) never imports from here."""
