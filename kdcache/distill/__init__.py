"""kdcache.distill"""
