"""Tools around the core: benchmark, comparison, evaluation, analysis, pictures, demo, web page,
video reading, model loading and timing. The core (``algorithm``, ``methods``, ``adapters``,
``engine``, ``report``, ``config``) never imports from here."""
