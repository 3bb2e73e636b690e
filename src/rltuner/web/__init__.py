"""The listening study's web app: rating pages, the ratings database and the server (``rltuner study serve``)."""
