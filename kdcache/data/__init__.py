"""kdcache.data"""
