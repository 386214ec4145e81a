"""Methods: what each paper adds on top of its backbone, one folder per paper.

semrepa/ (SemanticREPA: structure and identity alignment modules, their losses). A method may use
nn, models, diffusion, training and eval; pipelines and jobs use methods.
"""
