import asyncio


async def test_async_tests_run() -> None:
    """The conftest hook really awaits async tests (an assert inside must be able to fail)."""
    await asyncio.sleep(0)
    assert asyncio.get_running_loop() is not None
