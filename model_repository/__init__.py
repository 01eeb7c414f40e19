"""dfserve.model_repository"""
