"""The hand-over from receive threads to the writers: bounded, batched, woken only when needed."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import anyio.to_thread

from asyncdicom.write.inbox import Inbox


def test_a_full_inbox_holds_the_thread_until_a_task_takes_a_batch() -> None:
    """A thread puts without waiting while there is room, then waits (back-pressure); a take
    gives at most the batch asked for, oldest first, and lets the thread go on."""
    inbox = Inbox[int](3)
    filled, done = threading.Event(), threading.Event()
    put: list[int] = []

    def receive() -> None:
        for number in range(5):
            if number == 3:
                filled.set()
            assert inbox.put_from_thread(number)
            put.append(number)
        done.set()

    async def main() -> list[list[int]]:
        inbox.bind()
        thread = threading.Thread(target=receive, daemon=True)
        thread.start()
        await anyio.to_thread.run_sync(filled.wait)
        assert put == [0, 1, 2]
        assert not done.is_set()  # nobody took anything: the fourth cannot be in yet
        batches = [await inbox.take(2), await inbox.take(10)]
        await anyio.to_thread.run_sync(done.wait)
        batches.append(await inbox.take(10))
        return batches

    batches = anyio.run(main)
    assert batches[0] == [0, 1]
    assert [number for batch in batches for number in batch] == [0, 1, 2, 3, 4]
    assert put == [0, 1, 2, 3, 4]


def test_a_task_asleep_on_an_empty_inbox_is_woken_by_a_thread() -> None:
    """take() sleeps while the inbox is empty; a put from a thread wakes it (no polling)."""
    inbox = Inbox[str](8)

    async def main() -> list[str]:
        inbox.bind()
        async with anyio.create_task_group() as tg:
            taken: list[str] = []

            async def take() -> None:
                taken.extend(await inbox.take(4))

            tg.start_soon(take)
            await anyio.lowlevel.checkpoint()  # the taker runs first, and finds nothing
            assert inbox._sleepers == 1
            await anyio.to_thread.run_sync(inbox.put_from_thread, "one")
        return taken

    assert anyio.run(main) == ["one"]


def test_closing_wakes_takers_and_refuses_more() -> None:
    """Once closed: what is left is still taken, then [] (the writers stop); a put is refused
    at once, also by a thread that was waiting for room."""
    inbox = Inbox[int](1)

    async def main() -> tuple[list[int], list[int], bool, bool]:
        inbox.bind()
        assert await inbox.put(1)
        waiting = threading.Thread(target=lambda: results.append(inbox.put_from_thread(2)), daemon=True)
        waiting.start()  # waiting for room when the inbox closes, or about to: refused either way
        inbox.close()
        await anyio.to_thread.run_sync(waiting.join)
        return await inbox.take(5), await inbox.take(5), await inbox.put(3), results[0]

    results: list[bool] = []
    assert anyio.run(main) == ([1], [], False, False)
