"""kdcache.teacher"""
