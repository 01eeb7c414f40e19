"""dfserve.loadtest"""
