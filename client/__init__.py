"""dfserve.client"""
