"""Stage 2: the saliency annotation app and what reads its clicks.

- `python -m annotate_app`            the click-to-Gaussian annotation page (Gradio), `app.py`
- `python -m annotate_app.export`     clicks -> images + maps .npz for the saliency trainer
- `python -m annotate_app.oracle`     the "oracle" annotator from the simulator's stored clicks
- `python -m annotate_app.agreement`  CC/NSS/SIM/KLD/AUC between annotators and with the oracle
- `common.map_metrics`              the saliency-benchmark metrics (also used by `saliency`)
- `annotate_app.store`                names, frame selection and the per-frame click files
- `annotate_app.render`               frames re-rendered at the display size from their scene states
- `annotate_app.guard`                Host check, request-body cap and login throttle in front of the page
"""
