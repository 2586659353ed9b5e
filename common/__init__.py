"""Helpers every stage shares: typed command lines (cli), atomic writes and safe loads (io), run
folders and metric logs (runs), figure saving (figures), and the saliency-map metrics (map_metrics)
that both the annotation app and the saliency stage report.

Nothing here imports a stage; every stage may import this package.
"""
