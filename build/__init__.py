"""dfserve.build"""
