"""Grafana dashboards rendered to PNG from a live Prometheus (``python -m dashboards render``).

No Grafana server installs on this machine, so the dashboards of ``observability/dashboards`` are drawn with
matplotlib from Prometheus' ``/api/v1/query_range``: one picture per dashboard, a grid of its panels with
titles, units and legends. ``grafana`` holds the pure logic (variables, legends, units, layout, the panel
queries), ``prometheus`` the HTTP client, ``render`` the drawing and ``render_all``.
"""
